//! RFC 7644 §3.5.2 PATCH: parsing PatchOp request bodies and applying them atomically to a stored
//! resource document, tolerating every Microsoft Entra ID quirk listed in PROTOCOL.md.

use serde_json::{Map, Value};

use super::filter::{self, Filter, PatchPath};
use super::schema::{self, eq_ci, find_key_ci, get_ci, AttrDef, AttrType, Mutability, ResourceKind};

pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Add => "add",
            OpKind::Replace => "replace",
            OpKind::Remove => "remove",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

impl PatchOp {
    pub fn replace(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp { op: OpKind::Replace, path: Some(path.into()), value: Some(value) }
    }

    pub fn remove(path: impl Into<String>) -> PatchOp {
        PatchOp { op: OpKind::Remove, path: Some(path.into()), value: None }
    }

    /// The operation as a client sends it: lowercase `op`, then `path` and `value` when present.
    pub fn to_json(&self) -> Value {
        let mut op = Map::new();
        op.insert("op".into(), Value::String(self.op.as_str().into()));
        if let Some(path) = &self.path {
            op.insert("path".into(), Value::String(path.clone()));
        }
        if let Some(value) = &self.value {
            op.insert("value".into(), value.clone());
        }
        Value::Object(op)
    }
}

/// A PatchOp request body carrying `ops`, which `parse_patch` reads back.
pub fn request_body(ops: &[PatchOp]) -> Value {
    let operations = ops.iter().map(PatchOp::to_json).collect();
    let mut body = Map::new();
    body.insert("schemas".into(), Value::Array(vec![Value::String(PATCH_OP_SCHEMA.into())]));
    body.insert("Operations".into(), Value::Array(operations));
    Value::Object(body)
}

/// Always answered as HTTP 400 with this `scim_type`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct PatchError {
    /// "invalidSyntax" | "invalidPath" | "noTarget" | "invalidValue" | "mutability"
    pub scim_type: &'static str,
    pub detail: String,
}

impl PatchError {
    fn new(scim_type: &'static str, detail: impl Into<String>) -> Self {
        PatchError { scim_type, detail: detail.into() }
    }
    fn syntax(detail: impl Into<String>) -> Self {
        Self::new("invalidSyntax", detail)
    }
    fn path(detail: impl Into<String>) -> Self {
        Self::new("invalidPath", detail)
    }
    fn no_target(detail: impl Into<String>) -> Self {
        Self::new("noTarget", detail)
    }
    fn value(detail: impl Into<String>) -> Self {
        Self::new("invalidValue", detail)
    }
    fn mutability(detail: impl Into<String>) -> Self {
        Self::new("mutability", detail)
    }
    fn at(self, index: usize) -> Self {
        PatchError { scim_type: self.scim_type, detail: format!("Operations[{index}]: {}", self.detail) }
    }
}

/// Operations one PATCH may carry. Entra sends a handful per user and at most a few hundred member
/// changes per group request; a larger batch is a broken or hostile client.
pub const MAX_OPERATIONS: usize = 1000;

/// Parses a PatchOp request body.
///
/// Leniency, on purpose: `schemas` is not checked at all (missing, or lacking the PatchOp URN, is
/// accepted) because the operation list is unambiguous and rejecting it only breaks clients.
/// `Operations`, `op`, `path` and `value` keys match case-insensitively; `op` values too.
/// An empty or whitespace `path` counts as no path.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, PatchError> {
    let Value::Object(body) = body else {
        return Err(PatchError::syntax("the PATCH body must be a JSON object"));
    };
    let operations =
        get_ci(body, "Operations").ok_or_else(|| PatchError::syntax("the PATCH body has no 'Operations' array"))?;
    let Value::Array(operations) = operations else {
        return Err(PatchError::syntax("'Operations' must be an array"));
    };
    if operations.is_empty() {
        return Err(PatchError::syntax("'Operations' must not be empty"));
    }
    if operations.len() > MAX_OPERATIONS {
        return Err(PatchError::syntax(format!(
            "{} operations in one PATCH; at most {MAX_OPERATIONS} are accepted (split the change)",
            operations.len()
        )));
    }
    operations.iter().enumerate().map(|(index, raw)| parse_operation(raw).map_err(|e| e.at(index))).collect()
}

fn parse_operation(raw: &Value) -> Result<PatchOp, PatchError> {
    let Value::Object(raw) = raw else {
        return Err(PatchError::syntax("each operation must be a JSON object"));
    };
    let op = match get_ci(raw, "op") {
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "add" => OpKind::Add,
            "replace" => OpKind::Replace,
            "remove" => OpKind::Remove,
            _ => return Err(PatchError::syntax(format!("unknown op \"{s}\" (expected add, replace or remove)"))),
        },
        Some(_) => return Err(PatchError::syntax("'op' must be a string")),
        None => return Err(PatchError::syntax("the operation has no 'op'")),
    };
    let path = match get_ci(raw, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(PatchError::path("'path' must be a string")),
    };
    Ok(PatchOp { op, path, value: get_ci(raw, "value").cloned() })
}

/// Applies the ops in order to `doc` (the full stored SCIM resource) atomically: on error `doc` is left unchanged.
///
/// The result is normalised like `schema::normalize` (canonical names, no nulls, no empty arrays),
/// extension objects that appear are declared in `schemas`, and required attributes (`userName`,
/// Group `displayName`) must remain non-empty strings.
pub fn apply(kind: ResourceKind, doc: &mut Value, ops: &[PatchOp]) -> Result<(), PatchError> {
    let mut work = doc.clone();
    let Value::Object(root) = &work else {
        return Err(PatchError::value("the stored resource is not a JSON object"));
    };
    let required_before: Vec<&'static str> =
        required_attributes(kind).filter(|name| get_ci(root, name).is_some()).collect();
    for (index, op) in ops.iter().enumerate() {
        apply_operation(kind, &mut work, op).map_err(|e| e.at(index))?;
    }
    schema::normalize(kind, &mut work).map_err(|e| PatchError::value(e.detail))?;
    declare_extensions(kind, &mut work);
    check_required(kind, &work, &required_before)?;
    *doc = work;
    Ok(())
}

fn required_attributes(kind: ResourceKind) -> impl Iterator<Item = &'static str> {
    kind.schemas().first().map(|s| s.attributes).unwrap_or_default().iter().filter(|d| d.required).map(|d| d.name)
}

fn check_required(kind: ResourceKind, doc: &Value, required_before: &[&str]) -> Result<(), PatchError> {
    let Value::Object(root) = doc else {
        return Ok(());
    };
    for name in required_attributes(kind) {
        match get_ci(root, name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(_) => return Err(PatchError::value(format!("'{name}' must be a non-empty string"))),
            None if required_before.contains(&name) => {
                return Err(PatchError::value(format!("'{name}' is required and cannot be removed")))
            }
            None => {}
        }
    }
    Ok(())
}

/// Extension objects present in the document must be listed in `schemas` (RFC 7643 §3).
fn declare_extensions(kind: ResourceKind, doc: &mut Value) {
    let Value::Object(root) = doc else { return };
    let extensions: Vec<String> = root
        .iter()
        .filter(|(k, v)| {
            v.is_object()
                && !eq_ci(k, kind.core_schema_urn())
                && (schema::extension_for_urn(kind, k).is_some() || k.get(..4).is_some_and(|p| eq_ci(p, "urn:")))
        })
        .map(|(k, _)| k.clone())
        .collect();
    if extensions.is_empty() {
        return;
    }
    let schemas =
        root.entry("schemas").or_insert_with(|| Value::Array(vec![Value::String(kind.core_schema_urn().into())]));
    if !schemas.is_array() {
        *schemas = Value::Array(vec![Value::String(kind.core_schema_urn().into())]);
    }
    if let Value::Array(list) = schemas {
        for urn in extensions {
            if !list.iter().any(|s| s.as_str().is_some_and(|s| eq_ci(s, &urn))) {
                list.push(Value::String(urn));
            }
        }
    }
}

/// Where an operation lands.
#[derive(Debug)]
enum Target {
    /// The whole extension object (`path` is just the extension URN).
    Extension(String),
    Attr(Box<AttrTarget>),
}

#[derive(Debug)]
struct AttrTarget {
    /// Key of the extension object holding the attribute; `None` for core attributes.
    container: Option<String>,
    /// Canonical name for schema attributes, as sent for others.
    name: String,
    def: Option<&'static AttrDef>,
    filter: Option<Filter>,
    sub: Option<String>,
    sub_def: Option<&'static AttrDef>,
}

impl AttrTarget {
    fn is_server_managed(&self) -> bool {
        self.container.is_none() && ["id", "meta", "schemas"].iter().any(|n| eq_ci(n, &self.name))
    }

    fn is_read_only(&self) -> bool {
        self.is_server_managed()
            || self.def.is_some_and(|d| d.mutability == Mutability::ReadOnly)
            || self.sub_def.is_some_and(|d| d.mutability == Mutability::ReadOnly)
    }

    fn sub_name<'a>(&'a self, sub: &'a str) -> &'a str {
        self.sub_def.map_or(sub, |d| d.name)
    }

    fn identity(&self) -> Identity {
        match self.def {
            _ if eq_ci(&self.name, "members") => Identity::Value,
            Some(d) if d.kind == AttrType::Complex => {
                if d.sub_attribute("type").is_some_and(|t| !t.canonical_values.is_empty()) {
                    Identity::Type
                } else {
                    Identity::Value
                }
            }
            _ => Identity::Value,
        }
    }
}

/// How elements of a multi-valued attribute are recognised as "the same" when added again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// emails, phoneNumbers, addresses…: one element per `type` (PROTOCOL.md: one work email).
    Type,
    /// members, roles and unknown attributes: same `value` (and compatible `type`).
    Value,
}

fn resolve_target(kind: ResourceKind, path: &str) -> Result<Target, PatchError> {
    let path = path.trim();
    if let Some(ext) = schema::extension_for_urn(kind, path) {
        return Ok(Target::Extension(ext.urn.to_string()));
    }
    if eq_ci(path, kind.core_schema_urn()) {
        return Err(PatchError::path(format!("path '{path}' names a schema, not an attribute")));
    }
    let PatchPath { path: parsed, filter } =
        filter::parse_path(path).map_err(|e| PatchError::path(format!("invalid path '{path}': {}", e.detail)))?;
    let (container, known_urn) = match parsed.urn.as_deref() {
        None => (None, None),
        Some(u) if eq_ci(u, kind.core_schema_urn()) => (None, None),
        Some(u) => match schema::extension_for_urn(kind, u) {
            Some(ext) => (Some(ext.urn.to_string()), Some(ext.urn)),
            None if schema::is_known_schema_urn(u) => {
                return Err(PatchError::path(format!(
                    "schema '{u}' does not apply to {} resources",
                    kind.resource_type()
                )))
            }
            None => (Some(u.to_string()), None),
        },
    };
    let def = if container.is_none() || known_urn.is_some() {
        schema::resolve_parts(kind, known_urn, &parsed.attr, None).map(|r| r.attr)
    } else {
        None
    };
    if let Some(d) = def {
        if d.kind != AttrType::Complex && (parsed.sub.is_some() || filter.is_some()) {
            return Err(PatchError::path(format!("'{}' has no sub-attributes (path '{path}')", d.name)));
        }
        if let Some(f) = &filter {
            if !d.multi_valued {
                return Err(PatchError::path(format!(
                    "'{}' is not multi-valued, so it cannot take a filter (path '{path}')",
                    d.name
                )));
            }
            filter::validate_element(d, f)
                .map_err(|e| PatchError::path(format!("invalid path '{path}': {}", e.detail)))?;
        }
    }
    let sub_def = def.zip(parsed.sub.as_deref()).and_then(|(d, s)| d.sub_attribute(s));
    Ok(Target::Attr(Box::new(AttrTarget {
        container,
        name: def.map_or(parsed.attr, |d| d.name.to_string()),
        def,
        filter,
        sub: parsed.sub,
        sub_def,
    })))
}

fn apply_operation(kind: ResourceKind, work: &mut Value, op: &PatchOp) -> Result<(), PatchError> {
    let path = op.path.as_deref().map(str::trim).filter(|p| !p.is_empty());
    match op.op {
        OpKind::Remove => {
            let path = path.ok_or_else(|| PatchError::no_target("'remove' requires a 'path'"))?;
            let target = resolve_target(kind, path)?;
            check_writable(&target, path)?;
            remove(work, &target, op.value.as_ref())
        }
        OpKind::Add | OpKind::Replace => {
            let value = op
                .value
                .as_ref()
                .ok_or_else(|| PatchError::syntax(format!("'{}' requires a 'value'", op.op.as_str())))?;
            match path {
                None => apply_without_path(kind, work, op.op, value),
                Some(path) => {
                    let target = resolve_target(kind, path)?;
                    check_writable(&target, path)?;
                    set_or_remove(kind, work, op.op, &target, value)
                }
            }
        }
    }
}

fn check_writable(target: &Target, path: &str) -> Result<(), PatchError> {
    match target {
        Target::Attr(t) if t.is_read_only() => {
            Err(PatchError::mutability(format!("'{path}' is read-only and cannot be modified")))
        }
        _ => Ok(()),
    }
}

/// RFC 7644: a `null` value on add/replace means "remove the attribute".
fn set_or_remove(
    kind: ResourceKind,
    work: &mut Value,
    op: OpKind,
    target: &Target,
    value: &Value,
) -> Result<(), PatchError> {
    if value.is_null() {
        return remove(work, target, None);
    }
    match target {
        Target::Extension(urn) => {
            let Value::Object(members) = value else {
                return Err(PatchError::value(format!("the value for extension '{urn}' must be an object")));
            };
            for (name, member) in members {
                apply_key(kind, work, op, &format!("{urn}:{}", name.trim()), member)?;
            }
            Ok(())
        }
        Target::Attr(t) => set_attribute(work, op, t, value.clone()),
    }
}

/// One key of a no-path value object (or of an extension object), applied as if it were a path.
/// Server-managed and read-only keys are skipped: clients echo them back from GET responses.
fn apply_key(kind: ResourceKind, work: &mut Value, op: OpKind, path: &str, value: &Value) -> Result<(), PatchError> {
    let target = resolve_target(kind, path)?;
    if matches!(&target, Target::Attr(t) if t.is_read_only()) {
        return Ok(());
    }
    set_or_remove(kind, work, op, &target, value)
}

/// Whether `urn` names a custom extension this resource already uses, so that an object value
/// under that key is merged member by member rather than stored as one attribute.
fn declares_schema(work: &Value, urn: &str) -> bool {
    let Value::Object(root) = work else {
        return false;
    };
    if !urn.contains(':') {
        return false;
    }
    let listed = get_ci(root, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|s| s.as_str().is_some_and(|s| eq_ci(s, urn))));
    listed || get_ci(root, urn).is_some_and(Value::is_object)
}

fn apply_without_path(kind: ResourceKind, work: &mut Value, op: OpKind, value: &Value) -> Result<(), PatchError> {
    let Value::Object(members) = value else {
        return Err(PatchError::value(format!(
            "'{}' without a 'path' needs an object of attributes as its value",
            op.as_str()
        )));
    };
    for (key, member) in members {
        let key = key.trim();
        if ["id", "meta", "schemas"].iter().any(|n| eq_ci(n, key)) {
            continue;
        }
        if eq_ci(key, kind.core_schema_urn()) {
            if let Value::Object(core) = member {
                apply_without_path(kind, work, op, &Value::Object(core.clone()))?;
                continue;
            }
        }
        let extension = schema::extension_for_urn(kind, key)
            .map(|s| s.urn.to_string())
            .or_else(|| (member.is_object() && declares_schema(work, key)).then(|| key.to_string()));
        match extension {
            Some(urn) => set_or_remove(kind, work, op, &Target::Extension(urn), member)?,
            None => apply_key(kind, work, op, key, member)?,
        }
    }
    Ok(())
}

fn coerce(def: Option<&'static AttrDef>, value: Value, context: &str) -> Result<Option<Value>, PatchError> {
    match def {
        Some(d) => schema::coerce_value(d, value, context).map_err(|e| PatchError::value(e.detail)),
        None => Ok(strip_nulls(value)),
    }
}

/// Coerces one element of a multi-valued attribute (the definition describes the whole array).
fn coerce_element(def: Option<&'static AttrDef>, value: Value, context: &str) -> Result<Option<Value>, PatchError> {
    match coerce(def, value, context)? {
        Some(Value::Array(mut items)) if def.is_some_and(|d| d.multi_valued) => Ok(items.pop()),
        other => Ok(other),
    }
}

/// Attributes outside the schema keep their shape, minus nulls (Entra's `"$ref": null`).
fn strip_nulls(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(m) => {
            Some(Value::Object(m.into_iter().filter_map(|(k, v)| strip_nulls(v).map(|v| (k, v))).collect()))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(strip_nulls).collect())),
        other => Some(other),
    }
}

fn container_mut<'a>(
    work: &'a mut Value,
    container: Option<&str>,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, PatchError> {
    let root = work.as_object_mut().ok_or_else(|| PatchError::value("the resource is not a JSON object"))?;
    let Some(urn) = container else {
        return Ok(Some(root));
    };
    let key = match find_key_ci(root, urn) {
        Some(k) => k,
        None if create => {
            root.insert(urn.to_string(), Value::Object(Map::new()));
            urn.to_string()
        }
        None => return Ok(None),
    };
    let Some(slot) = root.get_mut(&key) else {
        return Ok(None);
    };
    if !slot.is_object() {
        if !create {
            return Ok(None);
        }
        *slot = Value::Object(Map::new());
    }
    Ok(slot.as_object_mut())
}

fn take_elements(container: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match container.get_mut(key) {
        Some(Value::Array(items)) => std::mem::take(items),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.take()],
    }
}

fn put_elements(container: &mut Map<String, Value>, key: String, elements: Vec<Value>) {
    if elements.is_empty() {
        container.shift_remove(&key);
    } else {
        container.insert(key, Value::Array(elements));
    }
}

fn set_member(object: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    let key = find_key_ci(object, name);
    match (key, value) {
        (Some(k), None) => {
            object.shift_remove(&k);
        }
        (None, None) => {}
        (Some(k), Some(v)) => {
            object.insert(k, v);
        }
        (None, Some(v)) => {
            object.insert(name.to_string(), v);
        }
    }
}

fn merge_object(existing: &mut Map<String, Value>, incoming: Map<String, Value>) {
    for (k, v) in incoming {
        set_member(existing, &k, Some(v));
    }
}

fn type_of(element: &Value) -> Option<&str> {
    element.as_object().and_then(|m| get_ci(m, "type")).and_then(Value::as_str)
}

fn value_of(element: &Value) -> Option<&Value> {
    match element {
        Value::Object(m) => get_ci(m, "value"),
        other => Some(other),
    }
}

fn same_element(existing: &Value, incoming: &Value, identity: Identity) -> bool {
    if existing == incoming {
        return true;
    }
    if identity == Identity::Type {
        if let Some(t) = type_of(incoming) {
            return type_of(existing).is_some_and(|e| eq_ci(e, t));
        }
    }
    let types_compatible = match (type_of(existing), type_of(incoming)) {
        (Some(a), Some(b)) => eq_ci(a, b),
        _ => true,
    };
    types_compatible && value_of(incoming).is_some() && value_of(existing) == value_of(incoming)
}

/// RFC 7643 §2.4: at most one element may be `primary`.
fn keep_single_primary(elements: &mut [Value], primary_index: usize) {
    let is_primary =
        |e: &Value| e.as_object().and_then(|m| get_ci(m, "primary")).is_some_and(|p| p == &Value::Bool(true));
    if !elements.get(primary_index).is_some_and(is_primary) {
        return;
    }
    for (i, e) in elements.iter_mut().enumerate() {
        if i != primary_index {
            if let Value::Object(m) = e {
                if let Some(k) = find_key_ci(m, "primary") {
                    m.insert(k, Value::Bool(false));
                }
            }
        }
    }
}

/// Adds an element, merging it into an existing one with the same identity (re-adding a member
/// is a no-op; a second `work` email updates the first).
fn add_element(elements: &mut Vec<Value>, incoming: Value, identity: Identity) {
    let index = match elements.iter().position(|e| same_element(e, &incoming, identity)) {
        Some(i) => {
            if let (Some(Value::Object(existing)), Value::Object(new)) = (elements.get_mut(i), incoming) {
                merge_object(existing, new);
            }
            i
        }
        None => {
            elements.push(incoming);
            elements.len() - 1
        }
    };
    keep_single_primary(elements, index);
}

/// Hash indexes over a multi-valued attribute's elements: by `type`, by `value` and by the whole element.
/// They only propose candidates; `same_element` decides, so an entry left stale by a merge is harmless.
#[derive(Default)]
struct ElementIndex {
    by_type: std::collections::HashMap<String, std::collections::BTreeSet<usize>>,
    by_value: std::collections::HashMap<String, std::collections::BTreeSet<usize>>,
    by_whole: std::collections::HashMap<String, std::collections::BTreeSet<usize>>,
}

impl ElementIndex {
    fn insert(&mut self, i: usize, e: &Value) {
        if let Some(t) = type_of(e) {
            self.by_type.entry(t.to_ascii_lowercase()).or_default().insert(i);
        }
        if let Some(v) = value_of(e) {
            self.by_value.entry(v.to_string()).or_default().insert(i);
        }
        self.by_whole.entry(e.to_string()).or_default().insert(i);
    }

    /// The first element `add_element` would merge `incoming` into, if any.
    fn find(&self, elements: &[Value], incoming: &Value, identity: Identity) -> Option<usize> {
        let mut candidates = std::collections::BTreeSet::new();
        if identity == Identity::Type {
            if let Some(t) = type_of(incoming) {
                candidates.extend(self.by_type.get(&t.to_ascii_lowercase()).into_iter().flatten());
            }
        }
        if let Some(v) = value_of(incoming) {
            candidates.extend(self.by_value.get(&v.to_string()).into_iter().flatten());
        }
        candidates.extend(self.by_whole.get(&incoming.to_string()).into_iter().flatten());
        candidates.into_iter().find(|&i| same_element(&elements[i], incoming, identity))
    }
}

/// `add_element` for each of `items`, in order, with the same result, in time linear in the number of
/// elements and items (a group PATCH may add thousands of members to a list of thousands); primaries are
/// tracked as a set instead of rescanning the list.
fn add_elements(elements: &mut Vec<Value>, items: Vec<Value>, identity: Identity) {
    let is_primary =
        |e: &Value| e.as_object().and_then(|m| get_ci(m, "primary")).is_some_and(|p| p == &Value::Bool(true));
    let mut index = ElementIndex::default();
    let mut primaries = std::collections::BTreeSet::new();
    for (i, e) in elements.iter().enumerate() {
        index.insert(i, e);
        if is_primary(e) {
            primaries.insert(i);
        }
    }
    for incoming in items {
        let i = match index.find(elements, &incoming, identity) {
            Some(i) => {
                if let (Some(Value::Object(existing)), Value::Object(new)) = (elements.get_mut(i), incoming) {
                    merge_object(existing, new);
                }
                i
            }
            None => {
                elements.push(incoming);
                elements.len() - 1
            }
        };
        index.insert(i, &elements[i]);
        if !is_primary(&elements[i]) {
            primaries.remove(&i);
            continue;
        }
        // RFC 7643 §2.4, as `keep_single_primary`: this one stays primary, every other one stops.
        for other in std::mem::take(&mut primaries) {
            if let Some(Value::Object(m)) = elements.get_mut(other).filter(|_| other != i) {
                if let Some(k) = find_key_ci(m, "primary") {
                    m.insert(k, Value::Bool(false));
                }
                // Changed, so the whole-element index must know its new form.
                index.insert(other, &elements[other]);
            }
        }
        primaries.insert(i);
    }
}

fn set_attribute(work: &mut Value, op: OpKind, t: &AttrTarget, value: Value) -> Result<(), PatchError> {
    let container = container_mut(work, t.container.as_deref(), true)?
        .ok_or_else(|| PatchError::value("the resource is not a JSON object"))?;
    let key = find_key_ci(container, &t.name).unwrap_or_else(|| t.name.clone());
    match (&t.filter, t.sub.as_deref()) {
        (None, None) => set_whole(container, key, op, t, value),
        (None, Some(sub)) => set_sub_attribute(container, key, t, sub, value),
        (Some(f), sub) => set_filtered(container, key, op, t, f, sub, value),
    }
}

fn set_whole(
    container: &mut Map<String, Value>,
    key: String,
    op: OpKind,
    t: &AttrTarget,
    value: Value,
) -> Result<(), PatchError> {
    let multi_valued = t
        .def
        .map_or_else(|| value.is_array() || matches!(container.get(&key), Some(Value::Array(_))), |d| d.multi_valued);
    if multi_valued {
        let items = match coerce(t.def, value, &t.name)? {
            Some(Value::Array(items)) => items,
            Some(single) => vec![single],
            None => Vec::new(),
        };
        let elements = match op {
            OpKind::Add => {
                let mut elements = take_elements(container, &key);
                let identity = t.identity();
                add_elements(&mut elements, items, identity);
                elements
            }
            _ => items,
        };
        put_elements(container, key, elements);
        return Ok(());
    }
    let Some(new_value) = coerce(t.def, value, &t.name)? else {
        container.shift_remove(&key);
        return Ok(());
    };
    match (op, container.get_mut(&key), new_value) {
        (OpKind::Add, Some(Value::Object(existing)), Value::Object(incoming)) => {
            merge_object(existing, incoming);
        }
        (_, _, new_value) => {
            container.insert(key, new_value);
        }
    }
    Ok(())
}

fn set_sub_attribute(
    container: &mut Map<String, Value>,
    key: String,
    t: &AttrTarget,
    sub: &str,
    value: Value,
) -> Result<(), PatchError> {
    let sub = t.sub_name(sub);
    let coerced = coerce(t.sub_def, value, &format!("{}.{sub}", t.name))?;
    let multi_valued = t.def.map_or_else(|| matches!(container.get(&key), Some(Value::Array(_))), |d| d.multi_valued);
    if multi_valued {
        let mut elements = take_elements(container, &key);
        if elements.is_empty() {
            if let Some(v) = coerced {
                let mut created = Map::new();
                created.insert(sub.to_string(), v);
                elements.push(Value::Object(created));
            }
        } else {
            for element in elements.iter_mut().filter_map(Value::as_object_mut) {
                set_member(element, sub, coerced.clone());
            }
        }
        put_elements(container, key, elements);
        return Ok(());
    }
    let slot = container.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(object) = slot {
        set_member(object, sub, coerced);
    }
    Ok(())
}

/// Builds the element a filtered path designates when none exists yet (Entra quirk 4):
/// `emails[type eq "work"].value` on a user without a work email creates `{type: work, value}`.
fn element_from_filter(t: &AttrTarget, f: &Filter) -> Result<Map<String, Value>, PatchError> {
    let pairs = filter::eq_conjunction(f).ok_or_else(|| {
        PatchError::no_target(format!(
            "no element of '{}' matches the filter, and only 'eq' filters joined by 'and' can create one",
            t.name
        ))
    })?;
    let mut created = Map::new();
    for (name, value) in pairs {
        let def = t.def.and_then(|d| d.sub_attribute(&name));
        let name = def.map_or(name, |d| d.name.to_string());
        if let Some(v) = coerce(def, value, &format!("{}.{name}", t.name))? {
            created.insert(name, v);
        }
    }
    Ok(created)
}

fn set_filtered(
    container: &mut Map<String, Value>,
    key: String,
    op: OpKind,
    t: &AttrTarget,
    f: &Filter,
    sub: Option<&str>,
    value: Value,
) -> Result<(), PatchError> {
    let mut elements = take_elements(container, &key);
    let matching: Vec<usize> =
        elements.iter().enumerate().filter(|(_, e)| filter::matches_element(t.def, f, e)).map(|(i, _)| i).collect();
    match sub {
        Some(sub) => {
            let sub = t.sub_name(sub);
            let coerced = coerce(t.sub_def, value, &format!("{}.{sub}", t.name))?;
            if matching.is_empty() {
                if let Some(v) = coerced {
                    let mut created = element_from_filter(t, f)?;
                    created.insert(sub.to_string(), v);
                    add_element(&mut elements, Value::Object(created), t.identity());
                }
            } else {
                for i in matching {
                    if let Some(Value::Object(element)) = elements.get_mut(i) {
                        set_member(element, sub, coerced.clone());
                    }
                }
            }
        }
        None => {
            let incoming = match coerce_element(t.def, value, &t.name)? {
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(PatchError::value(format!(
                        "a filtered path without a sub-attribute needs an object value for '{}'",
                        t.name
                    )))
                }
                None => Map::new(),
            };
            if matching.is_empty() {
                let mut created = element_from_filter(t, f)?;
                merge_object(&mut created, incoming);
                add_element(&mut elements, Value::Object(created), t.identity());
            } else {
                for i in matching {
                    match (op, elements.get_mut(i)) {
                        (OpKind::Add, Some(Value::Object(element))) => merge_object(element, incoming.clone()),
                        (_, Some(element)) => *element = Value::Object(incoming.clone()),
                        (_, None) => {}
                    }
                    keep_single_primary(&mut elements, i);
                }
            }
        }
    }
    put_elements(container, key, elements);
    Ok(())
}

/// Removes every element that `removal_matches` any of `wanted`, in time linear in both lists for the
/// forms Entra sends (`[{"value": id}, ...]` or bare values); only the rare object without a `value`
/// (matched as a subset of an element) is compared one by one.
fn remove_elements(elements: &mut Vec<Value>, wanted: &[Value]) {
    let mut by_value = std::collections::HashSet::new();
    let mut by_whole = std::collections::HashSet::new();
    let mut partial = Vec::new();
    for w in wanted {
        match w {
            Value::Object(o) => match get_ci(o, "value") {
                Some(v) => {
                    by_value.insert(v.to_string());
                }
                None => partial.push(w),
            },
            other => {
                by_value.insert(other.to_string());
                by_whole.insert(other.to_string());
            }
        }
    }
    elements.retain(|e| {
        let hit = value_of(e).is_some_and(|v| by_value.contains(&v.to_string()))
            || by_whole.contains(&e.to_string())
            || partial.iter().any(|w| removal_matches(e, w));
        !hit
    });
}

/// Whether `existing` is named by one item of a remove's value list (Entra default mode sends
/// `[{"value": id}]`; a bare id string is accepted too).
fn removal_matches(existing: &Value, wanted: &Value) -> bool {
    match wanted {
        Value::Object(w) => match get_ci(w, "value") {
            Some(v) => value_of(existing) == Some(v),
            None => {
                existing.as_object().is_some_and(|e| !w.is_empty() && w.iter().all(|(k, v)| get_ci(e, k) == Some(v)))
            }
        },
        other => existing == other || value_of(existing) == Some(other),
    }
}

fn remove(work: &mut Value, target: &Target, value: Option<&Value>) -> Result<(), PatchError> {
    let t = match target {
        Target::Extension(urn) => {
            if let Some(root) = work.as_object_mut() {
                if let Some(k) = find_key_ci(root, urn) {
                    root.shift_remove(&k);
                }
                if let Some(Value::Array(list)) = root.get_mut("schemas") {
                    list.retain(|s| !s.as_str().is_some_and(|s| eq_ci(s, urn)));
                }
            }
            return Ok(());
        }
        Target::Attr(t) => t,
    };
    // Removing what is not there succeeds: Entra may remove a member that is already gone.
    let Some(container) = container_mut(work, t.container.as_deref(), false)? else {
        return Ok(());
    };
    let Some(key) = find_key_ci(container, &t.name) else {
        return Ok(());
    };
    match (&t.filter, t.sub.as_deref()) {
        (None, None) => {
            let wanted = value.cloned().and_then(strip_nulls);
            match (wanted, container.get(&key)) {
                (Some(wanted), Some(Value::Array(_))) => {
                    let wanted = match wanted {
                        Value::Array(items) => items,
                        single => vec![single],
                    };
                    let mut elements = take_elements(container, &key);
                    remove_elements(&mut elements, &wanted);
                    put_elements(container, key, elements);
                }
                _ => {
                    container.shift_remove(&key);
                }
            }
        }
        (None, Some(sub)) => {
            let sub = t.sub_name(sub);
            match container.get_mut(&key) {
                Some(Value::Object(object)) => set_member(object, sub, None),
                Some(Value::Array(items)) => {
                    for element in items.iter_mut().filter_map(Value::as_object_mut) {
                        set_member(element, sub, None);
                    }
                }
                _ => {}
            }
        }
        (Some(f), sub) => {
            let mut elements = take_elements(container, &key);
            match sub {
                None => elements.retain(|e| !filter::matches_element(t.def, f, e)),
                Some(sub) => {
                    let sub = t.sub_name(sub);
                    for element in elements.iter_mut() {
                        if filter::matches_element(t.def, f, element) {
                            if let Value::Object(object) = element {
                                set_member(object, sub, None);
                            }
                        }
                    }
                }
            }
            put_elements(container, key, elements);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ADSCIM_GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    const ENT: &str = ENTERPRISE_USER_SCHEMA;
    const ABSENT: Value = Value::Null;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "id": "u1",
            "externalId": "ext-1",
            "userName": "Test_User_1",
            "active": true,
            "displayName": "Joy Young",
            "title": "Engineer",
            "name": {"formatted": "Joy Young", "familyName": "Young", "givenName": "Joy"},
            "emails": [{"primary": true, "type": "work", "value": "joy@contoso.com"}],
            "meta": {"resourceType": "User", "created": "2024-01-01T00:00:00Z", "lastModified": "2024-01-01T00:00:00Z"}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": [GROUP_SCHEMA, ADSCIM_GROUP_SCHEMA],
            "id": "g1",
            "externalId": "gext",
            "displayName": "grp",
            "members": [{"value": "m1"}],
            "meta": {"resourceType": "Group"}
        })
    }

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
    }

    enum Expect {
        /// JSON pointer → value; `ABSENT` (null) means the pointer must not resolve.
        Values(Vec<(&'static str, Value)>),
        Error(&'static str),
    }
    use Expect::{Error as Fails, Values as Yields};

    fn run(kind: ResourceKind, start: Value, ops: Value) -> (Value, Result<(), PatchError>) {
        let mut doc = start;
        let result = parse_patch(&body(ops)).and_then(|ops| apply(kind, &mut doc, &ops));
        (doc, result)
    }

    #[test]
    fn patch_table() {
        use ResourceKind::{Group as G, User as U};
        let cases: Vec<(&str, ResourceKind, Value, Value, Expect)> = vec![
            // quirk 1 + 2: op in any case, booleans as strings
            (
                "disable with \"False\"",
                U,
                user(),
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
                Yields(vec![("/active", json!(false))]),
            ),
            (
                "disable with boolean, lowercase op",
                U,
                user(),
                json!([{"op": "replace", "path": "active", "value": false}]),
                Yields(vec![("/active", json!(false))]),
            ),
            (
                "REPLACE in capitals with \"false\"",
                U,
                user(),
                json!([{"op": "REPLACE", "path": "ACTIVE", "value": "false"}]),
                Yields(vec![("/active", json!(false)), ("/ACTIVE", ABSENT)]),
            ),
            (
                "re-enable with \"True\"",
                U,
                json!({"userName": "u", "active": false}),
                json!([{"op": "Replace", "path": "active", "value": "True"}]),
                Yields(vec![("/active", json!(true))]),
            ),
            // single values
            (
                "Add nickName (default mode)",
                U,
                user(),
                json!([{"op": "Add", "path": "nickName", "value": "Babs"}]),
                Yields(vec![("/nickName", json!("Babs"))]),
            ),
            (
                "add nickName (flag mode)",
                U,
                user(),
                json!([{"op": "add", "path": "nickname", "value": "Babs"}]),
                Yields(vec![("/nickName", json!("Babs")), ("/nickname", ABSENT)]),
            ),
            (
                "Replace userName",
                U,
                user(),
                json!([{"op": "Replace", "path": "userName", "value": "renamed@contoso.com"}]),
                Yields(vec![("/userName", json!("renamed@contoso.com"))]),
            ),
            (
                "path spelled USERNAME stores userName",
                U,
                user(),
                json!([{"op": "replace", "path": "USERNAME", "value": "x"}]),
                Yields(vec![("/userName", json!("x")), ("/USERNAME", ABSENT)]),
            ),
            (
                "core-URN-qualified userName",
                U,
                user(),
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName", "value": "q"}]),
                Yields(vec![("/userName", json!("q"))]),
            ),
            (
                "name.familyName keeps givenName",
                U,
                user(),
                json!([{"op": "Replace", "path": "name.familyName", "value": "Old"}]),
                Yields(vec![("/name/familyName", json!("Old")), ("/name/givenName", json!("Joy"))]),
            ),
            (
                "name.givenName creates name",
                U,
                json!({"userName": "u"}),
                json!([{"op": "Add", "path": "name.givenName", "value": "G"}]),
                Yields(vec![("/name", json!({"givenName": "G"}))]),
            ),
            (
                "null value removes the attribute",
                U,
                user(),
                json!([{"op": "Replace", "path": "title", "value": null}]),
                Yields(vec![("/title", ABSENT)]),
            ),
            (
                "unknown attribute is stored as sent",
                U,
                user(),
                json!([{"op": "Add", "path": "customAttr", "value": {"a": 1, "b": null}}]),
                Yields(vec![("/customAttr", json!({"a": 1}))]),
            ),
            // filtered paths (quirk 4)
            (
                "replace work email in place",
                U,
                user(),
                json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@contoso.com"},
                    {"op": "Replace", "path": "name.familyName", "value": "F"}]),
                Yields(vec![
                    ("/emails", json!([{"primary": true, "type": "work", "value": "new@contoso.com"}])),
                    ("/name/familyName", json!("F")),
                ]),
            ),
            (
                "add creates missing home email",
                U,
                user(),
                json!([{"op": "Add", "path": "emails[type eq \"home\"].value", "value": "h@x"}]),
                Yields(vec![("/emails/1", json!({"type": "home", "value": "h@x"})), ("/emails/2", ABSENT)]),
            ),
            (
                "replace creates missing mobile phone",
                U,
                user(),
                json!([{"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"}]),
                Yields(vec![("/phoneNumbers", json!([{"type": "mobile", "value": "+1 555"}]))]),
            ),
            (
                "replace creates missing work address",
                U,
                user(),
                json!([{"op": "Replace", "path": "addresses[type eq \"work\"].postalCode", "value": "98052"}]),
                Yields(vec![("/addresses", json!([{"type": "work", "postalCode": "98052"}]))]),
            ),
            (
                "conjunction creates element with both values",
                U,
                json!({"userName": "u"}),
                json!([{"op": "add", "path": "emails[type eq \"work\" and primary eq true].value", "value": "w@x"}]),
                Yields(vec![("/emails", json!([{"type": "work", "primary": true, "value": "w@x"}]))]),
            ),
            (
                "non-eq filter without match is noTarget",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[value co \"nomatch\"].value", "value": "x"}]),
                Fails("noTarget"),
            ),
            (
                "replace filtered element with object",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": {"type": "work", "value": "r@x"}}]),
                Yields(vec![("/emails", json!([{"type": "work", "value": "r@x"}]))]),
            ),
            (
                "filter attribute names are case-insensitive",
                U,
                user(),
                json!([{"op": "replace", "path": "EMAILS[TYPE EQ \"WORK\"].VALUE", "value": "c@x"}]),
                Yields(vec![("/emails/0/value", json!("c@x")), ("/emails/1", ABSENT)]),
            ),
            // enterprise extension and manager
            (
                "employeeNumber via URN path declares the extension",
                U,
                user(),
                json!([{"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "42"}]),
                Yields(vec![
                    (
                        concat!("/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "/employeeNumber"),
                        json!("42"),
                    ),
                    ("/schemas/1", json!(ENT)),
                ]),
            ),
            (
                "manager as a bare id",
                U,
                user(),
                json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "mgr-1"}]),
                Yields(vec![(
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager",
                    json!({"value": "mgr-1"}),
                )]),
            ),
            (
                "manager as an object, URN in other case",
                U,
                user(),
                json!([{"op": "replace", "path": "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:MANAGER", "value": {"value": "mgr-2"}}]),
                Yields(vec![(
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager",
                    json!({"value": "mgr-2"}),
                )]),
            ),
            (
                "remove manager",
                U,
                json!({"userName": "u", "schemas": [USER_SCHEMA, ENT], ENT: {"manager": {"value": "m"}, "department": "d"}}),
                json!([{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]),
                Yields(vec![(
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                    json!({"department": "d"}),
                )]),
            ),
            (
                "custom extension URN path",
                U,
                user(),
                json!([{"op": "add", "path": "urn:contoso:scim:1.0:User:badge", "value": "B7"}]),
                Yields(vec![
                    ("/urn:contoso:scim:1.0:User/badge", json!("B7")),
                    ("/schemas/1", json!("urn:contoso:scim:1.0:User")),
                ]),
            ),
            // quirk 3: no path
            (
                "no-path value with dotted and URN keys (flag mode)",
                U,
                user(),
                json!([{"op": "replace", "value": {
                 "displayName": "New Name", "name.givenName": "Ada", "name.familyName": "Lovelace",
                 "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7"}}]),
                Yields(vec![
                    ("/displayName", json!("New Name")),
                    ("/name/givenName", json!("Ada")),
                    ("/name/familyName", json!("Lovelace")),
                    ("/name.givenName", ABSENT),
                    ("/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/employeeNumber", json!("7")),
                ]),
            ),
            (
                "no-path extension object merges members",
                U,
                json!({"userName": "u", ENT: {"department": "d"}}),
                json!([{"op": "add", "value": {ENT: {"costCenter": "c", "manager": {"value": "m"}}}}]),
                Yields(vec![(
                    "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                    json!({"department": "d", "costCenter": "c", "manager": {"value": "m"}}),
                )]),
            ),
            (
                "no-path ignores id, meta and schemas",
                U,
                user(),
                json!([{"op": "replace", "value": {"id": "hijack", "meta": {"created": "x"}, "schemas": [], "nickName": "N"}}]),
                Yields(vec![
                    ("/id", json!("u1")),
                    ("/meta/created", json!("2024-01-01T00:00:00Z")),
                    ("/schemas/0", json!(USER_SCHEMA)),
                    ("/nickName", json!("N")),
                ]),
            ),
            (
                "no-path active \"False\"",
                U,
                user(),
                json!([{"op": "Add", "value": {"active": "False"}}]),
                Yields(vec![("/active", json!(false))]),
            ),
            (
                "no-path add merges a complex value",
                U,
                user(),
                json!([{"op": "add", "value": {"name": {"middleName": "M"}}}]),
                Yields(vec![("/name/middleName", json!("M")), ("/name/givenName", json!("Joy"))]),
            ),
            (
                "no-path replace replaces a complex value",
                U,
                user(),
                json!([{"op": "replace", "value": {"NAME": {"givenName": "Z"}}}]),
                Yields(vec![("/name", json!({"givenName": "Z"}))]),
            ),
            (
                "no-path value must be an object",
                U,
                user(),
                json!([{"op": "replace", "value": "x"}]),
                Fails("invalidValue"),
            ),
            // multi-valued add/replace
            (
                "add a home email to the list",
                U,
                user(),
                json!([{"op": "add", "path": "emails", "value": [{"type": "home", "value": "h@x"}]}]),
                Yields(vec![("/emails/1/type", json!("home")), ("/emails/0/type", json!("work"))]),
            ),
            (
                "re-adding the work email does not duplicate it",
                U,
                user(),
                json!([{"op": "add", "path": "emails", "value": [{"type": "work", "value": "joy@contoso.com", "primary": true}]}]),
                Yields(vec![("/emails/1", ABSENT)]),
            ),
            (
                "replace emails replaces the list",
                U,
                user(),
                json!([{"op": "replace", "path": "emails", "value": [{"type": "home", "value": "h@x"}]}]),
                Yields(vec![("/emails", json!([{"type": "home", "value": "h@x"}]))]),
            ),
            (
                "add empty roles is a no-op",
                U,
                user(),
                json!([{"op": "Add", "path": "roles", "value": []}]),
                Yields(vec![("/roles", ABSENT)]),
            ),
            (
                "roles with the same type but different values both stay",
                U,
                user(),
                json!([{"op": "Add", "path": "roles", "value": [
                 {"type": "WindowsAzureActiveDirectoryRole", "value": "Admin", "primary": false},
                 {"type": "WindowsAzureActiveDirectoryRole", "value": "Reader", "primary": false}]}]),
                Yields(vec![("/roles/1/value", json!("Reader"))]),
            ),
            // groups and members (quirks 5, 6, 12)
            (
                "add member with $ref null",
                G,
                group(),
                json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u2"}]}]),
                Yields(vec![("/members", json!([{"value": "m1"}, {"value": "u2"}]))]),
            ),
            (
                "re-adding a member is a no-op",
                G,
                group(),
                json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "m1"}]}]),
                Yields(vec![("/members", json!([{"value": "m1"}]))]),
            ),
            (
                "add a single member object",
                G,
                group(),
                json!([{"op": "add", "path": "members", "value": {"value": "u3", "type": "User"}}]),
                Yields(vec![("/members/1", json!({"value": "u3", "type": "User"}))]),
            ),
            (
                "several membership operations in one PATCH",
                G,
                group(),
                json!([{"op": "Add", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]},
                    {"op": "Remove", "path": "members", "value": [{"value": "m1"}]}]),
                Yields(vec![("/members", json!([{"value": "u2"}, {"value": "u3"}]))]),
            ),
            (
                "Remove members with a value list (default mode)",
                G,
                group(),
                json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "m1"}]}]),
                Yields(vec![("/members", ABSENT), ("/displayName", json!("grp"))]),
            ),
            (
                "remove members[value eq] (flag mode)",
                G,
                group(),
                json!([{"op": "remove", "path": "members[value eq \"m1\"]"}]),
                Yields(vec![("/members", ABSENT)]),
            ),
            (
                "removing a member that is gone succeeds",
                G,
                group(),
                json!([{"op": "remove", "path": "members[value eq \"gone\"]"}]),
                Yields(vec![("/members", json!([{"value": "m1"}]))]),
            ),
            (
                "remove all members",
                G,
                json!({"displayName": "g", "members": [{"value": "a"}, {"value": "b"}]}),
                json!([{"op": "remove", "path": "members"}]),
                Yields(vec![("/members", ABSENT)]),
            ),
            (
                "Replace group displayName",
                G,
                group(),
                json!([{"op": "Replace", "path": "displayName", "value": "grp2"}]),
                Yields(vec![("/displayName", json!("grp2")), ("/schemas/1", json!(ADSCIM_GROUP_SCHEMA))]),
            ),
            (
                "group displayName is required",
                G,
                group(),
                json!([{"op": "remove", "path": "displayName"}]),
                Fails("invalidValue"),
            ),
            // remove
            (
                "remove the work email",
                U,
                user(),
                json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
                Yields(vec![("/emails", ABSENT)]),
            ),
            (
                "remove only the work email's value",
                U,
                user(),
                json!([{"op": "remove", "path": "emails[type eq \"work\"].value"}]),
                Yields(vec![("/emails", json!([{"primary": true, "type": "work"}]))]),
            ),
            (
                "remove a sub-attribute",
                U,
                user(),
                json!([{"op": "Remove", "path": "name.givenName"}]),
                Yields(vec![("/name/givenName", ABSENT), ("/name/familyName", json!("Young"))]),
            ),
            (
                "remove an absent attribute succeeds",
                U,
                user(),
                json!([{"op": "remove", "path": "nickName"}]),
                Yields(vec![("/nickName", ABSENT)]),
            ),
            ("remove without path", U, user(), json!([{"op": "remove"}]), Fails("noTarget")),
            // errors
            ("replace id", U, user(), json!([{"op": "replace", "path": "id", "value": "x"}]), Fails("mutability")),
            (
                "replace meta.lastModified",
                U,
                user(),
                json!([{"op": "replace", "path": "meta.lastModified", "value": "2030-01-01T00:00:00Z"}]),
                Fails("mutability"),
            ),
            (
                "replace read-only groups",
                U,
                user(),
                json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
                Fails("mutability"),
            ),
            (
                "empty userName",
                U,
                user(),
                json!([{"op": "replace", "path": "userName", "value": ""}]),
                Fails("invalidValue"),
            ),
            (
                "null userName",
                U,
                user(),
                json!([{"op": "replace", "path": "userName", "value": null}]),
                Fails("invalidValue"),
            ),
            (
                "numeric userName",
                U,
                user(),
                json!([{"op": "replace", "path": "userName", "value": 5}]),
                Fails("invalidValue"),
            ),
            ("remove userName", U, user(), json!([{"op": "Remove", "path": "userName"}]), Fails("invalidValue")),
            (
                "active \"maybe\"",
                U,
                user(),
                json!([{"op": "replace", "path": "active", "value": "maybe"}]),
                Fails("invalidValue"),
            ),
            (
                "emails replaced with a number",
                U,
                user(),
                json!([{"op": "replace", "path": "emails", "value": 5}]),
                Fails("invalidValue"),
            ),
            (
                "filtered element replaced with a string",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": "x"}]),
                Fails("invalidValue"),
            ),
            (
                "unterminated filter in path",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[type eq \"work", "value": "x"}]),
                Fails("invalidPath"),
            ),
            (
                "unclosed bracket in path",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}]),
                Fails("invalidPath"),
            ),
            (
                "too many dots",
                U,
                user(),
                json!([{"op": "replace", "path": "name.givenName.x", "value": "x"}]),
                Fails("invalidPath"),
            ),
            (
                "filter on a single-valued attribute",
                U,
                user(),
                json!([{"op": "replace", "path": "userName[value eq \"x\"]", "value": "x"}]),
                Fails("invalidPath"),
            ),
            (
                "unknown sub-attribute in filter",
                U,
                user(),
                json!([{"op": "replace", "path": "emails[tpye eq \"work\"].value", "value": "x"}]),
                Fails("invalidPath"),
            ),
            (
                "Group schema on a User path",
                U,
                user(),
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName", "value": "x"}]),
                Fails("invalidPath"),
            ),
            ("add without value", U, user(), json!([{"op": "add", "path": "nickName"}]), Fails("invalidSyntax")),
            (
                "unknown op",
                U,
                user(),
                json!([{"op": "move", "path": "nickName", "value": "x"}]),
                Fails("invalidSyntax"),
            ),
        ];
        let count = cases.len();
        for (name, kind, start, ops, expect) in cases {
            let (doc, result) = run(kind, start.clone(), ops);
            match expect {
                Expect::Values(checks) => {
                    if let Err(e) = &result {
                        panic!("{name}: unexpected error {e:?}");
                    }
                    for (pointer, want) in checks {
                        match (doc.pointer(pointer), want.is_null()) {
                            (None, true) => {}
                            (got, _) => assert_eq!(got, Some(&want), "{name}: {pointer} in {doc}"),
                        }
                    }
                    let mut renormalized = doc.clone();
                    assert!(schema::normalize(kind, &mut renormalized).is_ok(), "{name}");
                    assert_eq!(renormalized, doc, "{name}: result is not canonical");
                }
                Expect::Error(scim_type) => {
                    let err = result.expect_err(name);
                    assert_eq!(err.scim_type, scim_type, "{name}: {}", err.detail);
                    assert!(!err.detail.is_empty());
                    assert_eq!(doc, start, "{name}: doc changed on error");
                }
            }
        }
        assert!(count >= 40);
    }

    #[test]
    fn failed_patch_leaves_doc_unchanged() {
        let start = user();
        let (doc, result) = run(
            ResourceKind::User,
            start.clone(),
            json!([
                {"op": "replace", "path": "displayName", "value": "changed"},
                {"op": "replace", "path": "id", "value": "x"}
            ]),
        );
        let err = result.expect_err("second op fails");
        assert_eq!(err.scim_type, "mutability");
        assert!(err.detail.starts_with("Operations[1]"), "{}", err.detail);
        assert_eq!(doc, start);
    }

    #[test]
    fn only_one_primary_email() {
        let (doc, result) = run(
            ResourceKind::User,
            user(),
            json!([{"op": "add", "path": "emails", "value": [{"type": "home", "value": "h@x", "primary": true}]}]),
        );
        assert!(result.is_ok());
        assert_eq!(doc.pointer("/emails/0/primary"), Some(&json!(false)));
        assert_eq!(doc.pointer("/emails/1/primary"), Some(&json!(true)));
    }

    #[test]
    fn parse_patch_table() {
        let ok = [
            body(json!([{"op": "Add", "path": "members", "value": []}])),
            json!({"Operations": [{"op": "remove", "path": "x"}]}),
            json!({"schemas": ["urn:something:else"], "operations": [{"OP": "REPLACE", "PATH": "a", "VALUE": 1}]}),
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": "", "value": {"a": 1}}]}),
        ];
        for b in ok {
            assert!(parse_patch(&b).is_ok(), "{b}");
        }
        let parsed = parse_patch(&json!({"operations": [{"Op": " Replace ", "Path": " active ", "Value": "False"}]}));
        assert_eq!(
            parsed,
            Ok(vec![PatchOp { op: OpKind::Replace, path: Some("active".into()), value: Some(json!("False")) }])
        );
        let empty_path = parse_patch(&json!({"Operations": [{"op": "add", "path": " ", "value": {}}]}));
        assert_eq!(empty_path.map(|o| o.first().and_then(|o| o.path.clone())), Ok(None));
        let bad = [
            (json!([]), "invalidSyntax"),
            (json!({}), "invalidSyntax"),
            (json!({"Operations": []}), "invalidSyntax"),
            (json!({"Operations": {"op": "add"}}), "invalidSyntax"),
            (json!({"Operations": [1]}), "invalidSyntax"),
            (json!({"Operations": [{"path": "x"}]}), "invalidSyntax"),
            (json!({"Operations": [{"op": 1}]}), "invalidSyntax"),
            (json!({"Operations": [{"op": "copy", "path": "x"}]}), "invalidSyntax"),
            (json!({"Operations": [{"op": "add", "path": 3, "value": 1}]}), "invalidPath"),
        ];
        for (b, scim_type) in bad {
            assert_eq!(parse_patch(&b).map_err(|e| e.scim_type), Err(scim_type), "{b}");
        }
    }

    const KEYS: &[&str] = &[
        "userName",
        "USERNAME",
        "name",
        "name.givenName",
        "displayName",
        "active",
        "emails",
        "members",
        "value",
        "type",
        "primary",
        "$ref",
        "id",
        "meta",
        "schemas",
        "roles",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "x",
    ];

    const PATH_TOKENS: &[&str] = &[
        "userName",
        "name",
        ".givenName",
        "emails",
        "[type eq \"work\"]",
        ".value",
        "members",
        "[value eq \"m1\"]",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ":employeeNumber",
        ":manager",
        "phoneNumbers[type eq \"mobile\"]",
        "addresses",
        "id",
        "meta.created",
        "active",
        "[",
        "]",
        ".",
        "\"",
        " eq ",
        " and ",
        "x",
        "",
        "roles",
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "urn:x:y:",
        "displayName",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..100).prop_map(|n| json!(n)),
            prop_oneof![Just("True"), Just("false"), Just(""), Just("work"), Just("m1"), Just("x")]
                .prop_map(|s| Value::String(s.to_string())),
            "\\PC{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..5)
                    .prop_map(|pairs| { Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
            ]
        })
    }

    const VALID_PATHS: &[&str] = &[
        "userName",
        "displayName",
        "nickName",
        "active",
        "name",
        "name.givenName",
        "emails",
        "emails[type eq \"work\"].value",
        "emails[type eq \"work\"]",
        "members",
        "members[value eq \"m1\"]",
        "phoneNumbers[type eq \"mobile\"].value",
        "roles",
        "x",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ];

    fn patch_op() -> impl Strategy<Value = PatchOp> {
        let op = prop_oneof![Just(OpKind::Add), Just(OpKind::Replace), Just(OpKind::Remove)];
        let path = prop_oneof![
            6 => proptest::sample::select(VALID_PATHS).prop_map(|p| Some(p.to_string())),
            3 => proptest::collection::vec(proptest::sample::select(PATH_TOKENS), 1..4)
                .prop_map(|p| Some(p.concat())),
            1 => Just(None),
        ];
        let value = prop_oneof![9 => json_value().prop_map(Some), 1 => Just(None)];
        (op, path, value).prop_map(|(op, path, value)| PatchOp { op, path, value })
    }

    /// Elements drawn from a small alphabet so that types, values, primaries and whole elements collide.
    fn element() -> impl Strategy<Value = Value> {
        let ty = proptest::option::of(prop_oneof![Just("work"), Just("WORK"), Just("home"), Just("other")]);
        let value =
            proptest::option::of(prop_oneof![Just(json!("a")), Just(json!("b")), Just(json!(1)), Just(json!("A"))]);
        let primary = proptest::option::of(any::<bool>());
        let display = proptest::option::of(prop_oneof![Just("x"), Just("y")]);
        let bare = prop_oneof![Just(json!("a")), Just(json!("b"))];
        prop_oneof![
            4 => (ty, value, primary, display).prop_map(|(t, v, p, d)| {
                let mut m = Map::new();
                if let Some(t) = t { m.insert("type".into(), json!(t)); }
                if let Some(v) = v { m.insert("value".into(), v); }
                if let Some(p) = p { m.insert("primary".into(), json!(p)); }
                if let Some(d) = d { m.insert("display".into(), json!(d)); }
                Value::Object(m)
            }),
            1 => bare,
        ]
    }

    #[test]
    fn adding_many_members_at_once_is_linear() {
        // 20,000 members added to a group of 20,000: quadratic matching would take minutes.
        let existing: Vec<Value> = (0..20_000).map(|i| json!({"value": format!("m{i}")})).collect();
        let incoming: Vec<Value> = (10_000..30_000).map(|i| json!({"value": format!("m{i}")})).collect();
        let mut elements = existing;
        add_elements(&mut elements, incoming, Identity::Value);
        assert_eq!(elements.len(), 30_000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The indexed bulk add gives exactly what adding one element at a time gives.
        #[test]
        fn bulk_add_equals_one_by_one(
            start in proptest::collection::vec(element(), 0..6),
            items in proptest::collection::vec(element(), 0..8),
            by_type in any::<bool>(),
        ) {
            let identity = if by_type { Identity::Type } else { Identity::Value };
            let mut one_by_one = start.clone();
            for item in items.clone() {
                add_element(&mut one_by_one, item, identity);
            }
            let mut bulk = start;
            add_elements(&mut bulk, items, identity);
            prop_assert_eq!(bulk, one_by_one);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The indexed removal removes exactly what comparing each pair removes.
        #[test]
        fn bulk_remove_equals_pairwise(
            start in proptest::collection::vec(element(), 0..8),
            wanted in proptest::collection::vec(element(), 0..5),
        ) {
            let mut pairwise = start.clone();
            pairwise.retain(|e| !wanted.iter().any(|w| removal_matches(e, w)));
            let mut indexed = start;
            remove_elements(&mut indexed, &wanted);
            prop_assert_eq!(indexed, pairwise);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bodies_never_panic(b in json_value(), ops in proptest::collection::vec(json_value(), 0..4)) {
            let _ = parse_patch(&b);
            let wrapped = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
            if let Ok(parsed) = parse_patch(&wrapped) {
                let mut doc = user();
                if apply(ResourceKind::User, &mut doc, &parsed).is_err() {
                    prop_assert_eq!(doc, user());
                }
            }
        }

        #[test]
        fn random_ops_are_atomic_and_canonical(ops in proptest::collection::vec(patch_op(), 1..4), as_group in any::<bool>()) {
            let (kind, start) = if as_group { (ResourceKind::Group, group()) } else { (ResourceKind::User, user()) };
            let mut doc = start.clone();
            match apply(kind, &mut doc, &ops) {
                Err(_) => prop_assert_eq!(doc, start),
                Ok(()) => {
                    let mut again = doc.clone();
                    prop_assert!(schema::normalize(kind, &mut again).is_ok());
                    prop_assert_eq!(again, doc);
                }
            }
        }
    }

    #[test]
    fn a_request_body_parses_back_to_its_operations() {
        let ops = vec![PatchOp::replace("active", json!(false)), PatchOp::remove("name.familyName")];
        let body = request_body(&ops);
        assert_eq!(
            body,
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
                {"op": "replace", "path": "active", "value": false},
                {"op": "remove", "path": "name.familyName"}
            ]})
        );
        assert_eq!(parse_patch(&body).unwrap(), ops);
    }
}
