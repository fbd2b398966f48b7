//! RFC 7643 resource schemas served by the gateway (core User, enterprise User extension, core Group):
//! attribute definitions, case-insensitive path resolution, normalisation of incoming bodies into the
//! canonical stored shape, the `/Schemas` resources, and RFC 7644 §3.4.2.5 attribute projection.

use serde_json::{json, Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ADSCIM_GROUP_SCHEMA: &str = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    /// The core schema URN of this resource type.
    pub fn core_schema_urn(self) -> &'static str {
        match self {
            ResourceKind::User => USER_SCHEMA,
            ResourceKind::Group => GROUP_SCHEMA,
        }
    }

    /// The `meta.resourceType` / endpoint name ("User", "Group").
    pub fn resource_type(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// Core schema first, then the extensions this gateway knows for the resource type.
    pub fn schemas(self) -> &'static [&'static SchemaDef] {
        static USER_SCHEMAS: [&SchemaDef; 2] = [&CORE_USER, &ENTERPRISE_USER];
        static GROUP_SCHEMAS: [&SchemaDef; 1] = [&CORE_GROUP];
        match self {
            ResourceKind::User => &USER_SCHEMAS,
            ResourceKind::Group => &GROUP_SCHEMAS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
            AttrType::Binary => "binary",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct AttrDef {
    pub name: &'static str,
    pub kind: AttrType,
    pub multi_valued: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub required: bool,
    pub sub_attributes: &'static [AttrDef],
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub description: &'static str,
}

impl AttrDef {
    const fn new(name: &'static str, kind: AttrType, description: &'static str) -> Self {
        AttrDef {
            name,
            kind,
            multi_valued: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            required: false,
            sub_attributes: &[],
            canonical_values: &[],
            reference_types: &[],
            description,
        }
    }
    const fn multi(self) -> Self {
        AttrDef { multi_valued: true, ..self }
    }
    const fn exact(self) -> Self {
        AttrDef { case_exact: true, ..self }
    }
    const fn required(self) -> Self {
        AttrDef { required: true, ..self }
    }
    const fn mutability(self, mutability: Mutability) -> Self {
        AttrDef { mutability, ..self }
    }
    const fn returned(self, returned: Returned) -> Self {
        AttrDef { returned, ..self }
    }
    const fn unique(self, uniqueness: Uniqueness) -> Self {
        AttrDef { uniqueness, ..self }
    }
    const fn subs(self, sub_attributes: &'static [AttrDef]) -> Self {
        AttrDef { sub_attributes, ..self }
    }
    const fn canonical(self, canonical_values: &'static [&'static str]) -> Self {
        AttrDef { canonical_values, ..self }
    }
    const fn refs(self, reference_types: &'static [&'static str]) -> Self {
        AttrDef { reference_types, ..self }
    }

    /// Case-insensitive lookup of a sub-attribute.
    pub fn sub_attribute(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.sub_attributes, name)
    }
}

#[derive(Debug)]
pub struct SchemaDef {
    pub urn: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
}

use AttrType as T;
use Mutability as M;

const NAME_SUBS: &[AttrDef] = &[
    AttrDef::new("formatted", T::String, "The full name, formatted for display."),
    AttrDef::new("familyName", T::String, "The family name (last name)."),
    AttrDef::new("givenName", T::String, "The given name (first name)."),
    AttrDef::new("middleName", T::String, "The middle name(s)."),
    AttrDef::new("honorificPrefix", T::String, "The honorific prefix, e.g. 'Ms.'."),
    AttrDef::new("honorificSuffix", T::String, "The honorific suffix, e.g. 'III'."),
];

const EMAIL_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "Email address."),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label indicating the email's function.").canonical(&["work", "home", "other"]),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary email."),
];

const PHONE_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "Phone number."),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label indicating the number's function.")
        .canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary number."),
];

const IMS_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "Instant messaging address."),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label indicating the IM service.")
        .canonical(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary address."),
];

const PHOTO_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::Reference, "URL of a photo of the user.").refs(&["external"]),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label: 'photo' or 'thumbnail'.").canonical(&["photo", "thumbnail"]),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary photo."),
];

const ADDRESS_SUBS: &[AttrDef] = &[
    AttrDef::new("formatted", T::String, "The full mailing address."),
    AttrDef::new("streetAddress", T::String, "The full street address."),
    AttrDef::new("locality", T::String, "The city or locality."),
    AttrDef::new("region", T::String, "The state or region."),
    AttrDef::new("postalCode", T::String, "The zip code or postal code."),
    AttrDef::new("country", T::String, "The country name (ISO 3166-1 alpha-2)."),
    AttrDef::new("type", T::String, "A label indicating the address's function.").canonical(&["work", "home", "other"]),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary address."),
];

const USER_GROUP_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The identifier of the group.").mutability(M::ReadOnly),
    AttrDef::new("$ref", T::Reference, "The URI of the group.").mutability(M::ReadOnly).refs(&["User", "Group"]),
    AttrDef::new("display", T::String, "A human-readable name.").mutability(M::ReadOnly),
    AttrDef::new("type", T::String, "How the membership was derived.")
        .mutability(M::ReadOnly)
        .canonical(&["direct", "indirect"]),
];

const GENERIC_MULTI_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The value."),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label indicating the value's function."),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary value."),
];

const CERTIFICATE_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::Binary, "The value of an X.509 certificate."),
    AttrDef::new("display", T::String, "A human-readable name."),
    AttrDef::new("type", T::String, "A label indicating the certificate's function."),
    AttrDef::new("primary", T::Boolean, "Whether this is the primary certificate."),
];

const MANAGER_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The id of the SCIM resource representing the manager."),
    AttrDef::new("$ref", T::Reference, "The URI of the manager's SCIM resource.").refs(&["User"]),
    AttrDef::new("displayName", T::String, "The displayName of the manager.").mutability(M::ReadOnly),
];

const MEMBER_SUBS: &[AttrDef] = &[
    AttrDef::new("value", T::String, "Identifier of the member of this group.").exact().mutability(M::Immutable),
    AttrDef::new("$ref", T::Reference, "The URI of the member resource.")
        .exact()
        .mutability(M::Immutable)
        .refs(&["User", "Group"]),
    AttrDef::new("type", T::String, "The type of the member.").mutability(M::Immutable).canonical(&["User", "Group"]),
    AttrDef::new("display", T::String, "A human-readable name of the member."),
];

const META_SUBS: &[AttrDef] = &[
    AttrDef::new("resourceType", T::String, "The name of the resource type.").exact().mutability(M::ReadOnly),
    AttrDef::new("created", T::DateTime, "When the resource was added.").mutability(M::ReadOnly),
    AttrDef::new("lastModified", T::DateTime, "When the resource was last updated.").mutability(M::ReadOnly),
    AttrDef::new("location", T::Reference, "The URI of the resource.").exact().mutability(M::ReadOnly).refs(&["uri"]),
    AttrDef::new("version", T::String, "The version (ETag) of the resource.").exact().mutability(M::ReadOnly),
];

/// RFC 7643 §3.1 common attributes: present on every resource, not part of any schema resource.
pub static COMMON_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::new("id", T::String, "Unique identifier assigned by the service provider.")
        .exact()
        .mutability(M::ReadOnly)
        .returned(Returned::Always)
        .unique(Uniqueness::Server),
    AttrDef::new("externalId", T::String, "Identifier assigned by the provisioning client.").exact(),
    AttrDef::new("meta", T::Complex, "Resource metadata.").mutability(M::ReadOnly).subs(META_SUBS),
];

static USER_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::new("userName", T::String, "Unique identifier for the User, used to sign in.")
        .required()
        .unique(Uniqueness::Server),
    AttrDef::new("name", T::Complex, "The components of the user's name.").subs(NAME_SUBS),
    AttrDef::new("displayName", T::String, "The name of the User, suitable for display."),
    AttrDef::new("nickName", T::String, "The casual way to address the user."),
    AttrDef::new("profileUrl", T::Reference, "A URL to the user's online profile.").refs(&["external"]),
    AttrDef::new("title", T::String, "The user's title, e.g. 'Vice President'."),
    AttrDef::new("userType", T::String, "The relationship between the organization and the user."),
    AttrDef::new("preferredLanguage", T::String, "The user's preferred written or spoken language."),
    AttrDef::new("locale", T::String, "The user's default location for localisation."),
    AttrDef::new("timezone", T::String, "The user's time zone (IANA name)."),
    AttrDef::new("active", T::Boolean, "The user's administrative status."),
    AttrDef::new("password", T::String, "The user's cleartext password.")
        .mutability(M::WriteOnly)
        .returned(Returned::Never),
    AttrDef::new("emails", T::Complex, "Email addresses for the user.").multi().subs(EMAIL_SUBS),
    AttrDef::new("phoneNumbers", T::Complex, "Phone numbers for the user.").multi().subs(PHONE_SUBS),
    AttrDef::new("ims", T::Complex, "Instant messaging addresses for the user.").multi().subs(IMS_SUBS),
    AttrDef::new("photos", T::Complex, "URLs of photos of the user.").multi().subs(PHOTO_SUBS),
    AttrDef::new("addresses", T::Complex, "Physical mailing addresses for this user.").multi().subs(ADDRESS_SUBS),
    AttrDef::new("groups", T::Complex, "Groups the user belongs to.")
        .multi()
        .mutability(M::ReadOnly)
        .subs(USER_GROUP_SUBS),
    AttrDef::new("entitlements", T::Complex, "Entitlements of the user.").multi().subs(GENERIC_MULTI_SUBS),
    AttrDef::new("roles", T::Complex, "Roles of the user.").multi().subs(GENERIC_MULTI_SUBS),
    AttrDef::new("x509Certificates", T::Complex, "X.509 certificates issued to the user.")
        .multi()
        .subs(CERTIFICATE_SUBS),
];

static ENTERPRISE_USER_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::new("employeeNumber", T::String, "Numeric or alphanumeric identifier assigned to a person."),
    AttrDef::new("costCenter", T::String, "Identifies the name of a cost center."),
    AttrDef::new("organization", T::String, "Identifies the name of an organization."),
    AttrDef::new("division", T::String, "Identifies the name of a division."),
    AttrDef::new("department", T::String, "Identifies the name of a department."),
    AttrDef::new("manager", T::Complex, "The user's manager.").subs(MANAGER_SUBS),
];

static GROUP_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::new("displayName", T::String, "A human-readable name for the Group.").required(),
    AttrDef::new("members", T::Complex, "A list of members of the Group.").multi().subs(MEMBER_SUBS),
];

pub static CORE_USER: SchemaDef =
    SchemaDef { urn: USER_SCHEMA, name: "User", description: "User Account", attributes: USER_ATTRIBUTES };

pub static ENTERPRISE_USER: SchemaDef = SchemaDef {
    urn: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: ENTERPRISE_USER_ATTRIBUTES,
};

pub static CORE_GROUP: SchemaDef =
    SchemaDef { urn: GROUP_SCHEMA, name: "Group", description: "Group", attributes: GROUP_ATTRIBUTES };

/// Problem found while normalising a resource body. `scim_type` is always `invalidValue` or
/// `invalidSyntax`; both map to HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct SchemaError {
    pub scim_type: &'static str,
    pub detail: String,
}

impl SchemaError {
    fn invalid_value(detail: String) -> Self {
        SchemaError { scim_type: "invalidValue", detail }
    }
}

/// An attribute path resolved against the schemas of one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAttr {
    /// `Some` for extension attributes (the canonical extension URN), `None` for core and common ones.
    pub schema_urn: Option<&'static str>,
    pub attr: &'static AttrDef,
    pub sub: Option<&'static AttrDef>,
    /// Canonical spelling, e.g. `name.givenName` or `urn:…:enterprise:2.0:User:manager.value`.
    pub canonical: String,
}

impl ResolvedAttr {
    /// The definition the path ends at (the sub-attribute when there is one).
    pub fn leaf(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }
}

pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Case-insensitive attribute lookup in a definition list.
pub fn find_attr(defs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    defs.iter().find(|d| eq_ci(d.name, name))
}

/// Looks a key up case-insensitively in a JSON object, preferring an exact match.
pub fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| map.iter().find(|(k, _)| eq_ci(k, name)).map(|(_, v)| v))
}

/// The key actually used in `map` for `name`, compared case-insensitively.
pub fn find_key_ci(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_string());
    }
    map.keys().find(|k| eq_ci(k, name)).cloned()
}

/// Known schema (core or extension) of `kind` with this URN, compared case-insensitively.
pub fn schema_for_urn(kind: ResourceKind, urn: &str) -> Option<&'static SchemaDef> {
    kind.schemas().iter().copied().find(|s| eq_ci(s.urn, urn))
}

/// Extension schema of `kind` with this URN (never the core schema).
pub fn extension_for_urn(kind: ResourceKind, urn: &str) -> Option<&'static SchemaDef> {
    schema_for_urn(kind, urn).filter(|s| !eq_ci(s.urn, kind.core_schema_urn()))
}

/// Whether `urn` names one of the resource schemas this module defines, for any resource type.
pub fn is_known_schema_urn(urn: &str) -> bool {
    [USER_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA].iter().any(|u| eq_ci(u, urn))
}

/// Splits an optionally URN-qualified path on its last colon: URNs contain colons and dots
/// (`…:enterprise:2.0:User:manager.value`) but attribute names never contain colons.
pub fn split_urn(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once(':') {
        Some((urn, rest)) => (Some(urn), rest),
        None => (None, path),
    }
}

/// Resolves already split path parts. `urn` may be the core URN, a known extension or `None`.
pub fn resolve_parts(kind: ResourceKind, urn: Option<&str>, attr: &str, sub: Option<&str>) -> Option<ResolvedAttr> {
    let schema = match urn {
        None => kind.schemas().first().copied()?,
        Some(u) => schema_for_urn(kind, u)?,
    };
    let is_core = eq_ci(schema.urn, kind.core_schema_urn());
    let attr_def =
        find_attr(schema.attributes, attr).or_else(
            || {
                if is_core {
                    find_attr(COMMON_ATTRIBUTES, attr)
                } else {
                    None
                }
            },
        )?;
    let sub_def = match sub {
        Some(s) => Some(attr_def.sub_attribute(s)?),
        None => None,
    };
    let mut canonical = String::new();
    if !is_core {
        canonical.push_str(schema.urn);
        canonical.push(':');
    }
    canonical.push_str(attr_def.name);
    if let Some(s) = sub_def {
        canonical.push('.');
        canonical.push_str(s.name);
    }
    Some(ResolvedAttr { schema_urn: (!is_core).then_some(schema.urn), attr: attr_def, sub: sub_def, canonical })
}

/// Resolves an attribute path (case-insensitive, optionally URN-qualified: "userName", "name.givenName",
/// "urn:ietf:params:scim:schemas:core:2.0:User:userName", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
/// "emails.value", "members.value", "meta.lastModified") to its definition and its canonical path.
pub fn resolve(kind: ResourceKind, path: &str) -> Option<ResolvedAttr> {
    let (urn, rest) = split_urn(path.trim());
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    if sub.is_some_and(|s| s.contains('.')) {
        return None;
    }
    resolve_parts(kind, urn, attr, sub)
}

/// `"True"`, `"false"` (any case, trimmed) as a boolean: Entra sends booleans as strings.
pub fn parse_bool_str(s: &str) -> Option<bool> {
    let t = s.trim();
    if eq_ci(t, "true") {
        Some(true)
    } else if eq_ci(t, "false") {
        Some(false)
    } else {
        None
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Coerces one attribute value to the shape its definition requires. `Ok(None)` means "no value"
/// (null, an empty array, or a complex value that is empty once its nulls are gone).
/// `context` is the attribute path used in error details.
pub fn coerce_value(def: &'static AttrDef, value: Value, context: &str) -> Result<Option<Value>, SchemaError> {
    if value.is_null() {
        return Ok(None);
    }
    if !def.multi_valued {
        return coerce_single(def, value, context);
    }
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        other if def.kind != AttrType::Complex => vec![other],
        other => {
            return Err(SchemaError::invalid_value(format!(
                "attribute '{context}' must be an array of objects, got {}",
                json_type_name(&other)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(v) = coerce_single(def, item, context)? {
            out.push(v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

fn coerce_single(def: &'static AttrDef, value: Value, context: &str) -> Result<Option<Value>, SchemaError> {
    let wrong = |v: &Value, expected: &str| {
        SchemaError::invalid_value(format!("attribute '{context}' must be {expected}, got {}", json_type_name(v)))
    };
    match (def.kind, value) {
        (_, Value::Null) => Ok(None),
        (T::String | T::Reference | T::DateTime | T::Binary, Value::String(s)) => Ok(Some(Value::String(s))),
        (T::String | T::Reference | T::DateTime | T::Binary, other) => Err(wrong(&other, "a string")),
        (T::Boolean, Value::Bool(b)) => Ok(Some(Value::Bool(b))),
        // Entra's default (non-RFC) mode sends booleans as "True"/"False".
        (T::Boolean, Value::String(s)) => match parse_bool_str(&s) {
            Some(b) => Ok(Some(Value::Bool(b))),
            None => Err(SchemaError::invalid_value(format!(
                "attribute '{context}' must be a boolean, got the string \"{s}\""
            ))),
        },
        (T::Boolean, other) => Err(wrong(&other, "a boolean")),
        (T::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(Value::Number(n))),
        (T::Integer, other) => Err(wrong(&other, "an integer")),
        (T::Decimal, Value::Number(n)) => Ok(Some(Value::Number(n))),
        (T::Decimal, other) => Err(wrong(&other, "a number")),
        (T::Complex, Value::Object(members)) => {
            let normalized = normalize_members(def.sub_attributes, members, context)?;
            Ok((!normalized.is_empty()).then_some(Value::Object(normalized)))
        }
        // A bare id for a single complex reference (manager) is shorthand for {"value": id}.
        (T::Complex, Value::String(s)) if !def.multi_valued && def.sub_attribute("value").is_some() => {
            let mut m = Map::new();
            m.insert("value".to_string(), Value::String(s));
            Ok(Some(Value::Object(m)))
        }
        (T::Complex, other) => Err(wrong(&other, "an object")),
    }
}

fn normalize_members(
    defs: &'static [AttrDef],
    members: Map<String, Value>,
    context: &str,
) -> Result<Map<String, Value>, SchemaError> {
    let mut out = Map::with_capacity(members.len());
    for (key, value) in members {
        if is_empty_value(&value) {
            continue;
        }
        match find_attr(defs, &key) {
            Some(def) => {
                let path = if context.is_empty() { def.name.to_string() } else { format!("{context}.{}", def.name) };
                if let Some(v) = coerce_value(def, value, &path)? {
                    out.insert(def.name.to_string(), v);
                }
            }
            None => {
                out.insert(key, value);
            }
        }
    }
    Ok(out)
}

/// Normalises an incoming resource body in place: attribute names to their schema spelling (case-insensitive match, recursively, including sub-attributes and the enterprise extension object), JSON nulls removed (an unmapped attribute sent as null means absent), empty arrays removed, booleans sent as strings ("True"/"false", any case) turned into JSON booleans for Boolean attributes, `meta`/`id` left for the caller (do not remove). Unknown attributes are KEPT as they are (nothing Entra sends is dropped). Returns Err(SchemaError) with scimType invalidValue for a wrong type that cannot be coerced (e.g. active: "maybe", userName: 5, emails not an array/object).
pub fn normalize(kind: ResourceKind, doc: &mut Value) -> Result<(), SchemaError> {
    let Value::Object(map) = doc else {
        return Err(SchemaError {
            scim_type: "invalidSyntax",
            detail: "the resource body must be a JSON object".to_string(),
        });
    };
    let core = kind.schemas().first().copied().unwrap_or(&CORE_USER);
    let original = std::mem::take(map);
    let mut out = Map::with_capacity(original.len());
    for (key, value) in original {
        if is_empty_value(&value) {
            continue;
        }
        if let Some(ext) = extension_for_urn(kind, &key) {
            let Value::Object(members) = value else {
                return Err(SchemaError::invalid_value(format!(
                    "extension '{}' must be an object, got {}",
                    ext.urn,
                    json_type_name(&value)
                )));
            };
            let normalized = normalize_members(ext.attributes, members, ext.urn)?;
            if !normalized.is_empty() {
                out.insert(ext.urn.to_string(), Value::Object(normalized));
            }
            continue;
        }
        if eq_ci(&key, "schemas") {
            out.insert("schemas".to_string(), value);
            continue;
        }
        let def = find_attr(core.attributes, &key).or_else(|| find_attr(COMMON_ATTRIBUTES, &key));
        match def {
            // Server-managed: the caller decides what to do with them.
            Some(def) if def.name == "id" || def.name == "meta" => {
                out.insert(def.name.to_string(), value);
            }
            Some(def) => {
                if let Some(v) = coerce_value(def, value, def.name)? {
                    out.insert(def.name.to_string(), v);
                }
            }
            None => {
                out.insert(key, value);
            }
        }
    }
    *map = out;
    Ok(())
}

fn attr_json(def: &AttrDef) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(def.name));
    m.insert("type".into(), json!(def.kind.as_str()));
    m.insert("multiValued".into(), json!(def.multi_valued));
    m.insert("description".into(), json!(def.description));
    m.insert("required".into(), json!(def.required));
    if def.kind != AttrType::Complex {
        m.insert("caseExact".into(), json!(def.case_exact));
    }
    if !def.canonical_values.is_empty() {
        m.insert("canonicalValues".into(), json!(def.canonical_values));
    }
    if !def.reference_types.is_empty() {
        m.insert("referenceTypes".into(), json!(def.reference_types));
    }
    m.insert("mutability".into(), json!(def.mutability.as_str()));
    m.insert("returned".into(), json!(def.returned.as_str()));
    if def.kind != AttrType::Complex {
        m.insert("uniqueness".into(), json!(def.uniqueness.as_str()));
    }
    if !def.sub_attributes.is_empty() {
        let subs: Vec<Value> = def.sub_attributes.iter().map(attr_json).collect();
        m.insert("subAttributes".into(), Value::Array(subs));
    }
    Value::Object(m)
}

/// RFC 7643 §7 Schema resources (core User, enterprise User, Group) as JSON, each with meta.resourceType "Schema" and meta.location = format!("{base}/Schemas/{urn}").
pub fn schema_resources(base: &str) -> Vec<Value> {
    let base = base.trim_end_matches('/');
    [&CORE_USER, &ENTERPRISE_USER, &CORE_GROUP]
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s.attributes.iter().map(attr_json).collect();
            json!({
                "schemas": [SCHEMA_SCHEMA],
                "id": s.urn,
                "name": s.name,
                "description": s.description,
                "attributes": attributes,
                "meta": {
                    "resourceType": "Schema",
                    "location": format!("{base}/Schemas/{}", s.urn),
                },
            })
        })
        .collect()
}

/// One `attributes`/`excludedAttributes` entry, split into where it lives in the stored document.
#[derive(Debug)]
enum Selection {
    /// A whole extension object (`urn:…:enterprise:2.0:User`).
    Container(String),
    /// `container` is the extension key for extension attributes, `None` for core attributes.
    Attr { container: Option<String>, attr: String, sub: Option<String> },
}

fn parse_selection(kind: ResourceKind, doc: &Map<String, Value>, name: &str) -> Option<Selection> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if extension_for_urn(kind, name).is_some()
        || (name.contains(':') && doc.get(name).or_else(|| get_ci(doc, name)).is_some())
    {
        return Some(Selection::Container(name.to_string()));
    }
    let (urn, rest) = split_urn(name);
    let container = urn.filter(|u| !eq_ci(u, kind.core_schema_urn())).map(str::to_string);
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a.to_string(), Some(s.to_string())),
        None => (rest.to_string(), None),
    };
    Some(Selection::Attr { container, attr, sub })
}

fn same_container(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => eq_ci(x, y),
        _ => false,
    }
}

/// Keeps only the listed sub-attributes of a complex (or multi-valued complex) value.
fn keep_subs(value: &Value, subs: &[&str]) -> Option<Value> {
    let pick = |m: &Map<String, Value>| -> Map<String, Value> {
        m.iter().filter(|(k, _)| subs.iter().any(|s| eq_ci(s, k))).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    match value {
        Value::Object(m) => {
            let kept = pick(m);
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items
                .iter()
                .filter_map(|it| it.as_object().map(pick))
                .filter(|m| !m.is_empty())
                .map(Value::Object)
                .collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

fn remove_subs(value: &mut Value, sub: &str) {
    let strip = |m: &mut Map<String, Value>| {
        if let Some(k) = find_key_ci(m, sub) {
            m.shift_remove(&k);
        }
    };
    match value {
        Value::Object(m) => strip(m),
        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).for_each(strip),
        _ => {}
    }
}

/// Projects the members of one container (the resource itself, or an extension object) against
/// the `attributes` selections that target it.
fn project_members(
    members: &Map<String, Value>,
    container: Option<&str>,
    selections: &[Selection],
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in members {
        let mut whole = false;
        let mut subs: Vec<&str> = Vec::new();
        for sel in selections {
            if let Selection::Attr { container: c, attr, sub } = sel {
                if same_container(c.as_deref(), container) && eq_ci(attr, key) {
                    match sub {
                        None => whole = true,
                        Some(s) => subs.push(s),
                    }
                }
            }
        }
        if whole {
            out.insert(key.clone(), value.clone());
        } else if !subs.is_empty() {
            if let Some(v) = keep_subs(value, &subs) {
                out.insert(key.clone(), v);
            }
        }
    }
    out
}

fn is_never_returned(kind: ResourceKind, key: &str) -> bool {
    kind.schemas().first().and_then(|s| find_attr(s.attributes, key)).is_some_and(|d| d.returned == Returned::Never)
}

fn is_always_returned(key: &str) -> bool {
    eq_ci(key, "id") || eq_ci(key, "schemas")
}

/// RFC 7644 §3.4.2.5 `attributes` / `excludedAttributes`. Names are case-insensitive and may be
/// URN-qualified or dotted (`name.givenName`, `emails.value`). `id` and `schemas` are always
/// returned; `meta` only when `attributes` is empty or asks for it; `returned: never` attributes
/// (password) are never returned. When both lists are given, `attributes` is applied first.
pub fn project(kind: ResourceKind, doc: &Value, attributes: &[String], excluded: &[String]) -> Value {
    let Value::Object(source) = doc else {
        return doc.clone();
    };
    let mut result = if attributes.iter().all(|a| a.trim().is_empty()) {
        source.clone()
    } else {
        let selections: Vec<Selection> = attributes.iter().filter_map(|a| parse_selection(kind, source, a)).collect();
        let mut out = Map::new();
        for (key, value) in source {
            if is_always_returned(key) {
                out.insert(key.clone(), value.clone());
                continue;
            }
            let is_container = key.contains(':') && value.is_object();
            if is_container {
                if selections.iter().any(|s| matches!(s, Selection::Container(c) if eq_ci(c, key))) {
                    out.insert(key.clone(), value.clone());
                } else if let Value::Object(members) = value {
                    let kept = project_members(members, Some(key), &selections);
                    if !kept.is_empty() {
                        out.insert(key.clone(), Value::Object(kept));
                    }
                }
                continue;
            }
            let single: Map<String, Value> = std::iter::once((key.clone(), value.clone())).collect();
            out.extend(project_members(&single, None, &selections));
        }
        out
    };
    for name in excluded {
        match parse_selection(kind, source, name) {
            Some(Selection::Container(c)) => {
                if let Some(k) = find_key_ci(&result, &c) {
                    result.shift_remove(&k);
                }
            }
            Some(Selection::Attr { container, attr, sub }) => {
                let target = match &container {
                    None => Some(&mut result),
                    Some(c) => find_key_ci(&result, c).and_then(|k| result.get_mut(&k)).and_then(Value::as_object_mut),
                };
                let Some(target) = target else { continue };
                let Some(key) = find_key_ci(target, &attr) else {
                    continue;
                };
                if container.is_none() && is_always_returned(&key) {
                    continue;
                }
                match sub {
                    None => {
                        target.shift_remove(&key);
                    }
                    Some(s) => {
                        if let Some(v) = target.get_mut(&key) {
                            remove_subs(v, &s);
                        }
                    }
                }
            }
            None => {}
        }
    }
    result.retain(|k, _| !is_never_returned(kind, k));
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_table() {
        let cases: &[(ResourceKind, &str, Option<&str>)] = &[
            (ResourceKind::User, "userName", Some("userName")),
            (ResourceKind::User, "USERNAME", Some("userName")),
            (ResourceKind::User, "name.givenname", Some("name.givenName")),
            (ResourceKind::User, "urn:ietf:params:scim:schemas:core:2.0:User:userName", Some("userName")),
            (ResourceKind::User, "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:name.familyName", Some("name.familyName")),
            (
                ResourceKind::User,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            ),
            (
                ResourceKind::User,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:employeenumber",
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"),
            ),
            (ResourceKind::User, "emails.value", Some("emails.value")),
            (ResourceKind::User, "meta.lastModified", Some("meta.lastModified")),
            (ResourceKind::User, "id", Some("id")),
            (ResourceKind::User, "externalid", Some("externalId")),
            (ResourceKind::Group, "members.value", Some("members.value")),
            (ResourceKind::Group, "displayname", Some("displayName")),
            (ResourceKind::Group, "userName", None),
            (ResourceKind::User, "members", None),
            (ResourceKind::User, "noSuchAttribute", None),
            (ResourceKind::User, "name.nope", None),
            (ResourceKind::User, "name.givenName.x", None),
            (ResourceKind::User, "employeeNumber", None),
            (ResourceKind::User, ENTERPRISE_USER_SCHEMA, None),
            (ResourceKind::Group, "urn:ietf:params:scim:schemas:core:2.0:User:userName", None),
        ];
        for (kind, path, expected) in cases {
            let got = resolve(*kind, path).map(|r| r.canonical);
            assert_eq!(got.as_deref(), *expected, "resolve({kind:?}, {path})");
        }
        let manager =
            resolve(ResourceKind::User, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(manager.and_then(|r| r.schema_urn), Some(ENTERPRISE_USER_SCHEMA));
        let user_name = resolve(ResourceKind::User, "userName");
        assert!(user_name.is_some_and(|r| r.schema_urn.is_none() && r.attr.required && !r.attr.case_exact));
    }

    #[test]
    fn normalize_entra_create_body() {
        let mut doc = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "externalId": "ext-1",
            "UserName": "Test_User_1",
            "active": "True",
            "addresses": null,
            "emails": [{"Primary": "false", "TYPE": "work", "value": "a@b.c", "display": null}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "g f", "FamilyName": "f", "givenName": "g", "middleName": null},
            "phoneNumbers": null,
            "roles": [],
            "title": null,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {
                "EmployeeNumber": "42",
                "manager": "mgr-id",
                "department": null
            },
            "customThing": {"keep": true},
            "customNull": null
        });
        normalize(ResourceKind::User, &mut doc).expect("valid body");
        assert_eq!(
            doc,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "externalId": "ext-1",
                "userName": "Test_User_1",
                "active": true,
                "emails": [{"primary": false, "type": "work", "value": "a@b.c"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "g f", "familyName": "f", "givenName": "g"},
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "42", "manager": {"value": "mgr-id"}},
                "customThing": {"keep": true}
            })
        );
    }

    #[test]
    fn normalize_single_email_object_becomes_array_and_empty_complex_is_dropped() {
        let mut doc = json!({"userName": "u", "emails": {"value": "x@y"}, "name": {"givenName": null}});
        normalize(ResourceKind::User, &mut doc).expect("valid");
        assert_eq!(doc, json!({"userName": "u", "emails": [{"value": "x@y"}]}));
    }

    #[test]
    fn normalize_group_with_adscim_schema_and_ref_null_members() {
        let mut doc = json!({
            "schemas": [GROUP_SCHEMA, ADSCIM_GROUP_SCHEMA],
            "externalId": "g1", "DisplayName": "grp",
            "members": [{"$ref": null, "value": "u1"}],
            "meta": {"resourceType": "Group"}
        });
        normalize(ResourceKind::Group, &mut doc).expect("valid");
        assert_eq!(doc["displayName"], json!("grp"));
        assert_eq!(doc["members"], json!([{"value": "u1"}]));
        assert_eq!(doc["schemas"], json!([GROUP_SCHEMA, ADSCIM_GROUP_SCHEMA]));
    }

    #[test]
    fn normalize_rejects_uncoercible_types() {
        let bad = [
            json!({"userName": "u", "active": "maybe"}),
            json!({"userName": 5}),
            json!({"userName": "u", "emails": 3}),
            json!({"userName": "u", "emails": "a@b"}),
            json!({"userName": "u", "name": "John"}),
            json!({"userName": "u", "emails": [{"value": 1}]}),
            json!({"userName": "u", ENTERPRISE_USER_SCHEMA: "x"}),
        ];
        for mut doc in bad {
            let err = normalize(ResourceKind::User, &mut doc).expect_err("must fail");
            assert_eq!(err.scim_type, "invalidValue", "{doc}");
        }
        let mut not_object = json!([1]);
        assert_eq!(normalize(ResourceKind::User, &mut not_object).map_err(|e| e.scim_type), Err("invalidSyntax"));
    }

    #[test]
    fn schema_resources_have_meta_and_attributes() {
        let resources = schema_resources("https://x/scim/v2/");
        assert_eq!(resources.len(), 3);
        let user = &resources[0];
        assert_eq!(user["id"], json!(USER_SCHEMA));
        assert_eq!(user["meta"]["resourceType"], json!("Schema"));
        assert_eq!(user["meta"]["location"], json!(format!("https://x/scim/v2/Schemas/{USER_SCHEMA}")));
        let user_name = user["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "userName"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(user_name["required"], json!(true));
        assert_eq!(user_name["uniqueness"], json!("server"));
        assert_eq!(user_name["caseExact"], json!(false));
        assert_eq!(resources[1]["id"], json!(ENTERPRISE_USER_SCHEMA));
        assert_eq!(resources[2]["id"], json!(GROUP_SCHEMA));
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn project_attributes_and_exclusions() {
        let user = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "1", "userName": "u", "password": "secret",
            "name": {"givenName": "g", "familyName": "f"},
            "emails": [{"type": "work", "value": "a@b", "primary": true}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7", "department": "d"},
            "meta": {"resourceType": "User"}
        });
        let kind = ResourceKind::User;
        assert_eq!(
            project(kind, &user, &strings(&["USERNAME", "name.givenName", "emails.value"]), &[]),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "1", "userName": "u",
                   "name": {"givenName": "g"}, "emails": [{"value": "a@b"}]})
        );
        assert_eq!(
            project(
                kind,
                &user,
                &strings(&["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"]),
                &[]
            ),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "1", ENTERPRISE_USER_SCHEMA: {"department": "d"}})
        );
        let excluded =
            project(kind, &user, &[], &strings(&["emails", "name.familyName", "id", ENTERPRISE_USER_SCHEMA]));
        assert_eq!(
            excluded,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "1", "userName": "u",
                   "name": {"givenName": "g"}, "meta": {"resourceType": "User"}})
        );
        let group =
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "d", "members": [{"value": "1"}], "meta": {}});
        assert_eq!(
            project(ResourceKind::Group, &group, &[], &strings(&["members"])),
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "d", "meta": {}})
        );
        assert_eq!(
            project(ResourceKind::Group, &group, &strings(&["displayName"]), &strings(&["members"])),
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "d"})
        );
    }
}
