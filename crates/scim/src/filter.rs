//! RFC 7644 §3.4.2.2 filters: the parser (also used for PATCH paths), validation against the
//! resource schemas, and evaluation against stored resource documents.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::schema::{
    self, eq_ci, get_ci, is_known_schema_urn, AttrDef, AttrType, ResourceKind, GROUP_SCHEMA, USER_SCHEMA,
};

/// Nesting (parentheses, `not`, value paths) deeper than this is rejected instead of risking the stack.
pub const MAX_NESTING: usize = 64;
/// `and`/`or` chains build left-nested trees; this bounds their depth for evaluation and drop.
pub const MAX_LOGICAL_OPERATORS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `emails[type eq "work"]`. When written as `emails[type eq "work"].value eq "x"`, `sub` is
    /// `Some("value")` and the trailing comparison is folded into `filter` as an `And`, because
    /// both conditions must hold for the same element.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
        sub: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<CompareOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le)
    }
}

/// `[urn ":"] attr ["." sub]`, spelled as received (matching is case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Always answered as HTTP 400 with scimType `invalidFilter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FilterError {
    pub detail: String,
}

impl FilterError {
    pub const SCIM_TYPE: &'static str = "invalidFilter";

    fn new(detail: impl Into<String>) -> Self {
        FilterError { detail: detail.into() }
    }
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath` or `attrPath "[" valFilter "]" ["." subAttr]`.
/// With a filter, `path.sub` is the sub-attribute written after `]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPath {
    pub path: AttrPath,
    pub filter: Option<Filter>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Word(String),
    Str(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string \"{s}\""),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Tok>, FilterError> {
    let mut toks = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                toks.push(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    _ => Tok::RBracket,
                });
            }
            '"' => {
                chars.next();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| {
                    FilterError::new(format!("unterminated string literal starting at offset {start}"))
                })?;
                let literal = input.get(start..=end).unwrap_or_default();
                let text: String = serde_json::from_str(literal)
                    .map_err(|e| FilterError::new(format!("invalid string literal {literal}: {e}")))?;
                toks.push(Tok::Str(text));
            }
            _ => {
                let mut end = input.len();
                while let Some(&(i, ch)) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | '[' | ']' | '"') {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                toks.push(Tok::Word(input.get(start..end).unwrap_or_default().to_string()));
            }
        }
    }
    Ok(toks)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '$' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_attr_path(word: &str) -> Result<AttrPath, FilterError> {
    let (urn, rest) = schema::split_urn(word);
    if urn.is_some_and(|u| u.is_empty() || u.ends_with(':')) {
        return Err(FilterError::new(format!("invalid attribute path '{word}'")));
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
        return Err(FilterError::new(format!("invalid attribute path '{word}'")));
    }
    Ok(AttrPath { urn: urn.map(str::to_string), attr: attr.to_string(), sub: sub.map(str::to_string) })
}

fn is_keyword(tok: Option<&Tok>, keyword: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if eq_ci(w, keyword))
}

fn literal_value(tok: &Tok) -> Option<Value> {
    match tok {
        Tok::Str(s) => Some(Value::String(s.clone())),
        Tok::Word(w) if eq_ci(w, "true") => Some(Value::Bool(true)),
        Tok::Word(w) if eq_ci(w, "false") => Some(Value::Bool(false)),
        Tok::Word(w) if eq_ci(w, "null") => Some(Value::Null),
        Tok::Word(w) if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            match serde_json::from_str::<Value>(w) {
                Ok(n @ Value::Number(_)) => Some(n),
                _ => None,
            }
        }
        _ => None,
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    logical_ops: usize,
    in_value_filter: bool,
}

impl Parser {
    fn new(toks: Vec<Tok>) -> Self {
        Parser { toks, pos: 0, depth: 0, logical_ops: 0, in_value_filter: false }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.toks.get(self.pos).cloned();
        if tok.is_some() {
            self.pos += 1;
        }
        tok
    }

    fn expect(&mut self, want: Tok, context: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(FilterError::new(format!("expected {} {context}, found {}", want.describe(), t.describe()))),
            None => Err(FilterError::new(format!("expected {} {context}, found end of filter", want.describe()))),
        }
    }

    fn count_logical_op(&mut self) -> Result<(), FilterError> {
        self.logical_ops += 1;
        if self.logical_ops > MAX_LOGICAL_OPERATORS {
            return Err(FilterError::new(format!("filter has more than {MAX_LOGICAL_OPERATORS} and/or operators")));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        while is_keyword(self.peek(), "or") {
            self.pos += 1;
            self.count_logical_op()?;
            let right = self.parse_and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        while is_keyword(self.peek(), "and") {
            self.pos += 1;
            self.count_logical_op()?;
            let right = self.parse_unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError::new(format!("filter is nested more than {MAX_NESTING} levels deep")));
        }
        let result = self.parse_unary_inner();
        self.depth -= 1;
        result
    }

    fn parse_unary_inner(&mut self) -> Result<Filter, FilterError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) if eq_ci(&w, "not") && self.toks.get(self.pos + 1) == Some(&Tok::LParen) => {
                self.pos += 1;
                let inner = self.parse_unary()?;
                Ok(Filter::Not(Box::new(inner)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.parse_or()?;
                self.expect(Tok::RParen, "to close '('")?;
                Ok(inner)
            }
            Some(Tok::Word(w)) => {
                self.pos += 1;
                self.parse_attr_expression(&w)
            }
            Some(t) => {
                Err(FilterError::new(format!("expected an attribute name, '(' or 'not', found {}", t.describe())))
            }
            None => Err(FilterError::new("expected an attribute name, '(' or 'not', found end of filter")),
        }
    }

    fn parse_attr_expression(&mut self, word: &str) -> Result<Filter, FilterError> {
        let path = parse_attr_path(word)?;
        if self.peek() != Some(&Tok::LBracket) {
            return self.parse_comparison(path);
        }
        let (filter, sub) = self.parse_value_filter(&path)?;
        match sub {
            None => Ok(Filter::ValuePath { attr: path, filter: Box::new(filter), sub: None }),
            Some(sub) => {
                let sub_path = AttrPath { urn: None, attr: sub.clone(), sub: None };
                let comparison = self.parse_comparison(sub_path)?;
                Ok(Filter::ValuePath {
                    attr: path,
                    filter: Box::new(Filter::And(Box::new(filter), Box::new(comparison))),
                    sub: Some(sub),
                })
            }
        }
    }

    /// Parses `"[" valFilter "]" ["." sub]` after `path`.
    fn parse_value_filter(&mut self, path: &AttrPath) -> Result<(Filter, Option<String>), FilterError> {
        if self.in_value_filter {
            return Err(FilterError::new("value filters ('[...]') cannot be nested"));
        }
        if path.sub.is_some() {
            return Err(FilterError::new(format!(
                "'{path}[': a value filter must follow a multi-valued attribute, not a sub-attribute"
            )));
        }
        self.expect(Tok::LBracket, "")?;
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError::new(format!("filter is nested more than {MAX_NESTING} levels deep")));
        }
        self.in_value_filter = true;
        let inner = self.parse_or();
        self.in_value_filter = false;
        self.depth -= 1;
        let inner = inner?;
        self.expect(Tok::RBracket, &format!("to close '{path}['"))?;
        let sub = match self.peek() {
            Some(Tok::Word(w)) if w.starts_with('.') => {
                let name = w.get(1..).unwrap_or_default().to_string();
                if !valid_name(&name) {
                    return Err(FilterError::new(format!("invalid sub-attribute '{w}' after '{path}[...]'")));
                }
                self.pos += 1;
                Some(name)
            }
            _ => None,
        };
        Ok((inner, sub))
    }

    fn parse_comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        let op_word = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(t) => {
                return Err(FilterError::new(format!("expected an operator after '{path}', found {}", t.describe())))
            }
            None => return Err(FilterError::new(format!("expected an operator after '{path}', found end of filter"))),
        };
        if eq_ci(&op_word, "pr") {
            if let Some(t) = self.peek() {
                if literal_value(t).is_some() {
                    return Err(FilterError::new(format!(
                        "'{path} pr' takes no comparison value, found {}",
                        t.describe()
                    )));
                }
            }
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op_word).ok_or_else(|| {
            FilterError::new(format!(
                "unknown operator '{op_word}' after '{path}' (expected eq, ne, co, sw, ew, gt, ge, lt, le or pr)"
            ))
        })?;
        let value = match self.next() {
            Some(t) => literal_value(&t).ok_or_else(|| {
                FilterError::new(format!(
                    "invalid comparison value {} for '{path} {op_word}' (expected a quoted string, number, true, false or null)",
                    t.describe()
                ))
            })?,
            None => {
                return Err(FilterError::new(format!(
                    "missing comparison value after '{path} {op_word}'"
                )))
            }
        };
        Ok(Filter::Compare { path, op, value })
    }

    fn finish(&self) -> Result<(), FilterError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(FilterError::new(format!("unexpected {} after the end of the expression", t.describe()))),
        }
    }
}

/// Parses a filter expression (already URL-decoded).
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.trim().is_empty() {
        return Err(FilterError::new("empty filter"));
    }
    let mut parser = Parser::new(tokenize(input)?);
    let filter = parser.parse_or()?;
    parser.finish()?;
    Ok(filter)
}

/// `ATTR eq "value"` with `"` and `\\` escaped in the value: the one filter a client of a vendor's SCIM
/// service writes (lookups by userName or email), and what `parse` reads back.
pub fn eq_filter(attribute: &str, value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if c == '"' || c == '\\' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("{attribute} eq \"{escaped}\"")
}

/// Parses a PATCH operation `path`. Errors here are `invalidPath` for the PATCH layer.
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut parser = Parser::new(tokenize(input)?);
    let word = match parser.next() {
        Some(Tok::Word(w)) => w,
        Some(t) => return Err(FilterError::new(format!("expected an attribute path, found {}", t.describe()))),
        None => return Err(FilterError::new("empty path")),
    };
    let mut path = parse_attr_path(&word)?;
    let mut filter = None;
    if parser.peek() == Some(&Tok::LBracket) {
        let (inner, sub) = parser.parse_value_filter(&path)?;
        path.sub = sub;
        filter = Some(inner);
    }
    parser.finish()?;
    Ok(PatchPath { path, filter })
}

/// Top-level definition for a path of `kind`, `Ok(None)` for custom-extension attributes.
fn check_resource_path(kind: ResourceKind, path: &AttrPath) -> Result<Option<&'static AttrDef>, FilterError> {
    if let Some(urn) = &path.urn {
        if !is_known_schema_urn(urn) {
            return Ok(None);
        }
    }
    schema::resolve_parts(kind, path.urn.as_deref(), &path.attr, path.sub.as_deref())
        .map(|r| Some(r.leaf()))
        .ok_or_else(|| {
            FilterError::new(format!("unknown attribute '{path}' for resource type {}", kind.resource_type()))
        })
}

fn check_operator(def: Option<&'static AttrDef>, path: &AttrPath, op: CompareOp) -> Result<(), FilterError> {
    let Some(def) = def else { return Ok(()) };
    if op.is_ordering() && matches!(def.kind, AttrType::Boolean | AttrType::Binary) {
        return Err(FilterError::new(format!(
            "operator {op:?} cannot be used with the {} attribute '{path}'",
            def.kind.as_str()
        )));
    }
    if def.kind == AttrType::Complex && !def.multi_valued {
        return Err(FilterError::new(format!("'{path}' is complex: compare one of its sub-attributes instead")));
    }
    Ok(())
}

/// Validates a value filter (the part inside `[...]`) against the sub-attributes of `parent`.
pub fn validate_element(parent: &'static AttrDef, f: &Filter) -> Result<(), FilterError> {
    let sub_def = |path: &AttrPath| {
        if path.urn.is_some() || path.sub.is_some() {
            return Err(FilterError::new(format!(
                "'{path}' inside '{}[...]' must be a plain sub-attribute name",
                parent.name
            )));
        }
        parent
            .sub_attribute(&path.attr)
            .ok_or_else(|| FilterError::new(format!("unknown sub-attribute '{}' of '{}'", path.attr, parent.name)))
    };
    match f {
        Filter::Compare { path, op, .. } => check_operator(Some(sub_def(path)?), path, *op),
        Filter::Present(path) => sub_def(path).map(drop),
        Filter::And(a, b) | Filter::Or(a, b) => {
            validate_element(parent, a)?;
            validate_element(parent, b)
        }
        Filter::Not(inner) => validate_element(parent, inner),
        Filter::ValuePath { .. } => Err(FilterError::new("value filters cannot be nested")),
    }
}

/// Unknown attributes (not in the schema of `kind`) are an error, EXCEPT attributes qualified with a URN that is not one of the known schemas (custom extensions an admin may map) which are allowed.
pub fn validate(kind: ResourceKind, f: &Filter) -> Result<(), FilterError> {
    match f {
        Filter::Compare { path, op, .. } => {
            let def = check_resource_path(kind, path)?;
            check_operator(def, path, *op)
        }
        Filter::Present(path) => check_resource_path(kind, path).map(drop),
        Filter::And(a, b) | Filter::Or(a, b) => {
            validate(kind, a)?;
            validate(kind, b)
        }
        Filter::Not(inner) => validate(kind, inner),
        Filter::ValuePath { attr, filter, sub } => {
            let Some(def) = check_resource_path(kind, attr)? else {
                return Ok(());
            };
            if def.kind != AttrType::Complex {
                return Err(FilterError::new(format!("'{attr}' has no sub-attributes to filter on")));
            }
            validate_element(def, filter)?;
            if let Some(s) = sub {
                if def.sub_attribute(s).is_none() {
                    return Err(FilterError::new(format!("unknown sub-attribute '{s}' of '{attr}'")));
                }
            }
            Ok(())
        }
    }
}

/// The object holding `path`'s attribute: the resource itself, or an extension object.
fn container_of<'a>(kind: ResourceKind, doc: &'a Value, path: &AttrPath) -> Option<&'a Map<String, Value>> {
    let root = doc.as_object()?;
    match &path.urn {
        Some(urn) if !eq_ci(urn, kind.core_schema_urn()) => get_ci(root, urn)?.as_object(),
        _ => Some(root),
    }
}

fn definition_of(kind: ResourceKind, path: &AttrPath) -> Option<&'static AttrDef> {
    let urn = path.urn.as_deref().filter(|u| is_known_schema_urn(u));
    if path.urn.is_some() && urn.is_none() {
        return None;
    }
    schema::resolve_parts(kind, urn, &path.attr, path.sub.as_deref()).map(|r| r.leaf())
}

/// A complex multi-valued attribute compared without a sub-attribute is compared on `value`.
fn comparison_definition(def: Option<&'static AttrDef>) -> Option<&'static AttrDef> {
    match def {
        Some(d) if d.kind == AttrType::Complex => d.sub_attribute("value"),
        other => other,
    }
}

fn push_flattened<'a>(out: &mut Vec<&'a Value>, v: &'a Value) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        other => out.push(other),
    }
}

/// Values an attribute path yields in `container`: multi-valued attributes contribute each
/// element (their `value` for complex elements), sub-attribute paths each element's sub-attribute.
fn values_at<'a>(container: &'a Map<String, Value>, attr: &str, sub: Option<&str>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let Some(v) = get_ci(container, attr) else {
        return out;
    };
    match (v, sub) {
        (Value::Array(items), None) => {
            for item in items {
                match item {
                    Value::Object(m) => {
                        if let Some(x) = get_ci(m, "value") {
                            push_flattened(&mut out, x);
                        }
                    }
                    other => out.push(other),
                }
            }
        }
        (Value::Array(items), Some(s)) => {
            for item in items.iter().filter_map(Value::as_object) {
                if let Some(x) = get_ci(item, s) {
                    push_flattened(&mut out, x);
                }
            }
        }
        (Value::Object(m), Some(s)) => {
            if let Some(x) = get_ci(m, s) {
                push_flattened(&mut out, x);
            }
        }
        (other, None) => out.push(other),
        (_, Some(_)) => {}
    }
    out
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}

fn ordering_matches(ord: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_strings(actual: &str, expected: &str, op: CompareOp, case_exact: bool) -> bool {
    let (a, b) = if case_exact {
        (actual.to_string(), expected.to_string())
    } else {
        (actual.to_lowercase(), expected.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&b),
        CompareOp::Sw => a.starts_with(&b),
        CompareOp::Ew => a.ends_with(&b),
        _ => ordering_matches(a.cmp(&b), op),
    }
}

fn compare_numbers(a: f64, b: f64, op: CompareOp) -> bool {
    a.partial_cmp(&b).is_some_and(|ord| ordering_matches(ord, op))
}

fn compare_one(actual: &Value, def: Option<&'static AttrDef>, op: CompareOp, expected: &Value) -> bool {
    let case_exact = def.is_some_and(|d| d.case_exact);
    let datetime_capable = def.is_none_or(|d| d.kind == AttrType::DateTime);
    match (actual, expected) {
        (Value::String(a), Value::String(b)) => {
            if datetime_capable && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
                if let (Some(ta), Some(tb)) = (parse_datetime(a), parse_datetime(b)) {
                    return ordering_matches(ta.cmp(&tb), op);
                }
            }
            compare_strings(a, b, op, case_exact)
        }
        (Value::Bool(a), Value::Bool(b)) => bool_matches(*a, Some(*b), op),
        // Entra's default mode may have stored or sent booleans as "True"/"False".
        (Value::Bool(a), Value::String(b)) => bool_matches(*a, schema::parse_bool_str(b), op),
        (Value::String(a), Value::Bool(b)) => match schema::parse_bool_str(a) {
            Some(a) => bool_matches(a, Some(*b), op),
            None => op == CompareOp::Ne,
        },
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => compare_numbers(a, b, op),
            _ => false,
        },
        (Value::Number(a), Value::String(b)) => match (a.as_f64(), b.trim().parse::<f64>()) {
            (Some(a), Ok(b)) => compare_numbers(a, b, op),
            _ => op == CompareOp::Ne,
        },
        (Value::String(a), Value::Number(b)) => match (a.trim().parse::<f64>(), b.as_f64()) {
            (Ok(a), Some(b)) => compare_numbers(a, b, op),
            _ => op == CompareOp::Ne,
        },
        _ => op == CompareOp::Ne,
    }
}

fn bool_matches(actual: bool, expected: Option<bool>, op: CompareOp) -> bool {
    match (op, expected) {
        (CompareOp::Eq, Some(b)) => actual == b,
        (CompareOp::Ne, Some(b)) => actual != b,
        (CompareOp::Ne, None) => true,
        _ => false,
    }
}

/// `eq null` asks for absence; an absent attribute is `ne` anything.
fn compare_all(values: &[&Value], def: Option<&'static AttrDef>, op: CompareOp, expected: &Value) -> bool {
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    if expected.is_null() {
        return match op {
            CompareOp::Eq => present.is_empty(),
            CompareOp::Ne => !present.is_empty(),
            _ => false,
        };
    }
    if present.is_empty() {
        return op == CompareOp::Ne;
    }
    present.iter().any(|v| compare_one(v, def, op, expected))
}

fn present_at(container: &Map<String, Value>, path: &AttrPath) -> bool {
    match &path.sub {
        None => get_ci(container, &path.attr).is_some_and(is_present),
        Some(sub) => values_at(container, &path.attr, Some(sub)).iter().any(|v| is_present(v)),
    }
}

fn elements_of<'a>(container: &'a Map<String, Value>, attr: &str) -> Vec<&'a Value> {
    match get_ci(container, attr) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    }
}

/// Evaluates against a stored resource document. Attribute names case-insensitive; string comparison honours the schema's caseExact (userName, emails.value, displayName: case-insensitive; externalId, id: case-exact); multi-valued attributes match if any element matches; `pr` is false for null, "", [] and {}; gt/ge/lt/le work for strings, numbers and dateTime strings (meta.lastModified gt "2011-05-13T04:42:34Z"); comparing a boolean to a string works if Entra sent "True". Never panics.
pub fn matches(kind: ResourceKind, f: &Filter, doc: &Value) -> bool {
    match f {
        Filter::Compare { path, op, value } => {
            let Some(container) = container_of(kind, doc, path) else {
                return compare_all(&[], None, *op, value);
            };
            let values = values_at(container, &path.attr, path.sub.as_deref());
            let def = comparison_definition(definition_of(kind, path));
            compare_all(&values, def, *op, value)
        }
        Filter::Present(path) => container_of(kind, doc, path).is_some_and(|c| present_at(c, path)),
        Filter::And(a, b) => matches(kind, a, doc) && matches(kind, b, doc),
        Filter::Or(a, b) => matches(kind, a, doc) || matches(kind, b, doc),
        Filter::Not(inner) => !matches(kind, inner, doc),
        Filter::ValuePath { attr, filter, .. } => {
            let Some(container) = container_of(kind, doc, attr) else {
                return false;
            };
            let parent = definition_of(kind, attr);
            elements_of(container, &attr.attr).into_iter().any(|element| matches_element(parent, filter, element))
        }
    }
}

/// Evaluates a value filter (the part inside `[...]`) against one element of a multi-valued
/// attribute whose definition is `parent` (`None` for attributes outside the schema).
pub fn matches_element(parent: Option<&'static AttrDef>, f: &Filter, element: &Value) -> bool {
    match f {
        Filter::Compare { path, op, value } => {
            let def = parent.and_then(|p| p.sub_attribute(&path.attr));
            let values = match element.as_object() {
                Some(m) if path.urn.is_none() => values_at(m, &path.attr, path.sub.as_deref()),
                _ => Vec::new(),
            };
            compare_all(&values, def, *op, value)
        }
        Filter::Present(path) => element.as_object().is_some_and(|m| path.urn.is_none() && present_at(m, path)),
        Filter::And(a, b) => matches_element(parent, a, element) && matches_element(parent, b, element),
        Filter::Or(a, b) => matches_element(parent, a, element) || matches_element(parent, b, element),
        Filter::Not(inner) => !matches_element(parent, inner, element),
        Filter::ValuePath { .. } => false,
    }
}

/// If `f` is `a eq v` or a conjunction of such comparisons on plain sub-attribute names (as in
/// `emails[type eq "work" and primary eq true]`), returns the pairs: PATCH uses them to create the
/// element a filtered path refers to when none exists yet.
pub fn eq_conjunction(f: &Filter) -> Option<Vec<(String, Value)>> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value }
            if path.urn.is_none() && path.sub.is_none() && !value.is_null() =>
        {
            Some(vec![(path.attr.clone(), value.clone())])
        }
        Filter::And(a, b) => {
            let mut pairs = eq_conjunction(a)?;
            pairs.extend(eq_conjunction(b)?);
            Some(pairs)
        }
        _ => None,
    }
}

/// If the filter is exactly `<attr> eq "<string>"` for a top-level attribute, returns (canonical attr name, value) so storage can use an index (the gateway uses it for userName, externalId, displayName, id).
pub fn simple_eq(f: &Filter) -> Option<(String, String)> {
    let Filter::Compare { path, op: CompareOp::Eq, value: Value::String(value) } = f else {
        return None;
    };
    if path.sub.is_some() {
        return None;
    }
    let kinds: &[ResourceKind] = match path.urn.as_deref() {
        None => &[ResourceKind::User, ResourceKind::Group],
        Some(u) if eq_ci(u, USER_SCHEMA) => &[ResourceKind::User],
        Some(u) if eq_ci(u, GROUP_SCHEMA) => &[ResourceKind::Group],
        Some(_) => return None,
    };
    kinds
        .iter()
        .find_map(|k| schema::resolve_parts(*k, None, &path.attr, None))
        .filter(|r| r.attr.kind != AttrType::Complex)
        .map(|r| (r.attr.name.to_string(), value.clone()))
}

/// Parses RFC 3339 date-times (`2011-05-13T04:42:34Z`, fractions, offsets) into a comparable
/// (seconds since the epoch, nanoseconds) pair. Also taken, as clients send them: a bare date (midnight
/// UTC), a space for the `T`, a time without seconds, and no offset (UTC). These are rewritten into
/// RFC 3339 and the `time` crate does the parsing.
pub fn parse_datetime(s: &str) -> Option<(i64, u32)> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(day) = time::Date::parse(s, &date) {
        return Some((day.midnight().assume_utc().unix_timestamp(), 0));
    }
    let mut text = s.to_string();
    if text.get(10..11) == Some(" ") {
        text.replace_range(10..11, "T");
    }
    if text.len() >= 16 && text.get(16..17) != Some(":") && text.is_char_boundary(16) {
        text.insert_str(16, ":00");
    }
    let has_offset = text.get(19..).is_some_and(|rest| rest.contains(['Z', 'z', '+', '-']));
    if !has_offset {
        text.push('Z');
    }
    let at = time::OffsetDateTime::parse(&text, &Rfc3339).ok()?;
    Some((at.unix_timestamp(), at.nanosecond()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ENTERPRISE: &str = schema::ENTERPRISE_USER_SCHEMA;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Ext-Abc",
            "userName": "Test_User_00aa",
            "displayName": "Babs Jensen",
            "nickName": "",
            "title": null,
            "active": true,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"type": "work", "value": "Bjensen@Example.com", "primary": true},
                {"type": "home", "value": "babs@jensen.org"}
            ],
            "phoneNumbers": [],
            "addresses": [{"type": "work", "postalCode": "98052", "country": "US"}],
            "roles": [{}],
            "x-custom": {"level": 3},
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "mgr-1"}},
            "urn:example:custom:1.0:User": {"badge": "B-7"},
            "meta": {"resourceType": "User", "created": "2011-08-01T18:29:49.793Z", "lastModified": "2011-08-01T21:32:44.882+02:00"}
        })
    }

    fn legacy_user() -> Value {
        json!({"userName": "legacy", "active": "True", "employeeCount": 12})
    }

    fn group() -> Value {
        json!({
            "schemas": [GROUP_SCHEMA],
            "id": "g-1", "displayName": "Sales Team", "externalId": "gext",
            "members": [{"value": "u-1"}, {"value": "U-2", "type": "User"}]
        })
    }

    /// (resource kind, document, filter, expected) — every filter must parse and validate.
    #[test]
    fn evaluation_table() {
        use ResourceKind::{Group as G, User as U};
        let cases: Vec<(ResourceKind, Value, &str, bool)> = vec![
            // PROTOCOL.md forms
            (U, user(), r#"userName eq "Test_User_00aa""#, true),
            (U, user(), r#"userName eq "test_user_00AA""#, true),
            (U, user(), r#"userName eq "6c1b2b5e-1b2a-4d7e-9d33-8f0d12e4a111""#, false),
            (U, user(), r#"externalId eq "Ext-Abc""#, true),
            (U, user(), r#"externalId eq "ext-abc""#, false),
            (U, user(), r#"emails[type eq "work"].value eq "bjensen@example.com""#, true),
            (U, user(), r#"emails[type eq "home"].value eq "bjensen@example.com""#, false),
            (U, user(), r#"emails[type eq "work"].value eq "x@y" and active eq true"#, false),
            (U, user(), r#"emails[type eq "work"].value eq "Bjensen@Example.com" and active eq true"#, true),
            (G, group(), r#"displayName eq "sales team""#, true),
            (G, group(), r#"displayName eq "Sales""#, false),
            (U, user(), r#"userName eq "Test_User_00aa" and externalId eq "Ext-Abc""#, true),
            // every operator
            (U, user(), r#"displayName ne "Babs""#, true),
            (U, user(), r#"displayName ne "babs jensen""#, false),
            (U, user(), r#"displayName co "JENS""#, true),
            (U, user(), r#"displayName sw "babs""#, true),
            (U, user(), r#"displayName sw "Jensen""#, false),
            (U, user(), r#"displayName ew "jensen""#, true),
            (U, user(), r#"displayName gt "Aaron""#, true),
            (U, user(), r#"displayName ge "babs jensen""#, true),
            (U, user(), r#"displayName lt "Aaron""#, false),
            (U, user(), r#"displayName le "Zed""#, true),
            (U, user(), r#"userName pr"#, true),
            (U, user(), r#"title pr"#, false),
            (U, user(), r#"nickName pr"#, false),
            (U, user(), r#"phoneNumbers pr"#, false),
            (U, user(), r#"roles pr"#, false),
            (U, user(), r#"emails pr"#, true),
            (U, user(), r#"name.givenName pr"#, true),
            (U, user(), r#"name.middleName pr"#, false),
            // case-insensitive names and keywords
            (U, user(), r#"USERNAME EQ "test_user_00aa""#, true),
            (U, user(), r#"Name.GivenName Eq "barbara""#, true),
            (U, user(), r#"userName Eq "nobody" OR Active eq TRUE"#, true),
            (U, user(), r#"NOT (userName eq "nobody")"#, true),
            // precedence and parentheses
            (U, user(), r#"userName eq "nobody" and active eq true or displayName pr"#, true),
            (U, user(), r#"userName eq "nobody" and (active eq true or displayName pr)"#, false),
            (U, user(), r#"displayName pr or userName eq "nobody" and active eq false"#, true),
            (U, user(), r#"(displayName pr or userName eq "nobody") and active eq false"#, false),
            (U, user(), r#"not (active eq true) or userName eq "nobody""#, false),
            (U, user(), r#"not (active eq true and userName eq "nobody")"#, true),
            (U, user(), r#"not(not(active eq true))"#, true),
            // multi-valued and value paths
            (U, user(), r#"emails co "jensen.org""#, true),
            (U, user(), r#"emails.value ew "@example.com""#, true),
            (U, user(), r#"emails.type eq "other""#, false),
            (U, user(), r#"emails[type eq "work" and primary eq true]"#, true),
            (U, user(), r#"emails[type eq "home" and primary eq true]"#, false),
            (U, user(), r#"emails[type eq "home" or value co "example"]"#, true),
            (U, user(), r#"emails[not (type eq "work")]"#, true),
            (U, user(), r#"emails[value pr]"#, true),
            (U, user(), r#"addresses[type eq "work"].postalCode eq "98052""#, true),
            (G, group(), r#"members[value eq "u-1"]"#, true),
            (G, group(), r#"members[value eq "U-1"]"#, false),
            (G, group(), r#"members.value eq "U-2""#, true),
            (G, group(), r#"members eq "u-2""#, false),
            // URN-qualified paths
            (
                U,
                user(),
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
                true,
            ),
            (
                U,
                user(),
                r#"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:EMPLOYEENUMBER eq "701984""#,
                true,
            ),
            (U, user(), r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "mgr-1""#, true),
            (U, user(), r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "test_""#, true),
            (U, user(), r#"urn:example:custom:1.0:User:badge eq "b-7""#, true),
            (U, user(), r#"urn:example:other:1.0:User:badge pr"#, false),
            // case-exact ids
            (U, user(), r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false),
            (U, user(), r#"id eq "2819c223-7f76-453a-919d-413861904646""#, true),
            // dateTime comparisons (lastModified is 19:32:44.882Z)
            (U, user(), r#"meta.lastModified gt "2011-05-13T04:42:34Z""#, true),
            (U, user(), r#"meta.lastModified gt "2011-08-01T20:00:00Z""#, false),
            (U, user(), r#"meta.lastModified lt "2011-08-01T19:32:45Z""#, true),
            (U, user(), r#"meta.lastModified eq "2011-08-01T19:32:44.882Z""#, true),
            (U, user(), r#"meta.created ge "2011-08-01T18:29:49.793Z""#, true),
            (U, user(), r#"meta.created le "2011-08-01""#, false),
            // booleans and strings sent by Entra's default mode
            (U, user(), r#"active eq "True""#, true),
            (U, user(), r#"active eq "false""#, false),
            (U, legacy_user(), r#"active eq true"#, true),
            (U, legacy_user(), r#"active ne false"#, true),
            // absent attributes and null
            (U, user(), r#"title eq null"#, true),
            (U, user(), r#"userName eq null"#, false),
            (U, user(), r#"title ne "x""#, true),
            (U, user(), r#"profileUrl eq "x""#, false),
            // string escapes and whitespace
            (U, json!({"displayName": "Ré \"quoted\" \\ x"}), r#"displayName eq "R\u00e9 \"quoted\" \\ x""#, true),
            (U, user(), "  userName   eq\t\"Test_User_00aa\"  ", true),
        ];
        for (kind, doc, text, expected) in cases {
            let f = parse(text).unwrap_or_else(|e| panic!("parse {text}: {e}"));
            validate(kind, &f).unwrap_or_else(|e| panic!("validate {text}: {e}"));
            assert_eq!(matches(kind, &f, &doc), expected, "{text}");
        }
    }

    #[test]
    fn numbers_compare_numerically_outside_the_schema() {
        let doc = json!({"x-count": 12, "x-ratio": 0.5});
        for (text, expected) in [
            ("urn:x:y:count gt 3", false),
            ("x-count gt 3", true),
            ("x-count le 12", true),
            ("x-count lt 1e1", false),
            ("x-ratio eq 0.5", true),
            ("x-ratio ge -1", true),
        ] {
            let f = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(matches(ResourceKind::User, &f, &doc), expected, "{text}");
        }
    }

    #[test]
    fn parse_errors_table() {
        let bad = [
            "",
            "   ",
            "userName eq",
            "userName+eq",
            r#"displayName eq "unterminated"#,
            r#"userName eq "x" garbage"#,
            r#"userName eq "x")"#,
            r#"userName pr "x""#,
            "userName pr true",
            r#"userName like "x""#,
            r#"userName "x""#,
            r#"(userName eq "x""#,
            r#"userName eq "x" and"#,
            r#"and userName eq "x""#,
            r#"not userName eq "x""#,
            "userName eq bareword",
            r#"userName eq "bad \q escape""#,
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"].value"#,
            r#"emails[type eq "work"]. eq "x""#,
            r#"emails[types[x eq "y"]]"#,
            r#"name.givenName[x eq "y"]"#,
            r#"a.b.c eq "x""#,
            r#"1abc eq "x""#,
            r#":userName eq "x""#,
            r#"userName eq "x" or or"#,
            "[",
            "()",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "should not parse: {text:?}");
        }
        let deep = format!("{}userName pr{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).is_err());
        let deep_not = format!("{}userName pr{}", "not (".repeat(100), ")".repeat(100));
        assert!(parse(&deep_not).is_err());
        let ok_depth = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&ok_depth).is_ok());
        let long_chain = vec!["userName pr"; 1000].join(" and ");
        assert!(parse(&long_chain).is_err());
    }

    #[test]
    fn parse_structure() {
        let f = parse(r#"a eq 1 or b eq 2 and not (c pr)"#).expect("parses");
        let cmp = |name: &str, n: i64| Filter::Compare {
            path: AttrPath { urn: None, attr: name.into(), sub: None },
            op: CompareOp::Eq,
            value: json!(n),
        };
        let c = Filter::Present(AttrPath { urn: None, attr: "c".into(), sub: None });
        assert_eq!(
            f,
            Filter::Or(
                Box::new(cmp("a", 1)),
                Box::new(Filter::And(Box::new(cmp("b", 2)), Box::new(Filter::Not(Box::new(c)))))
            )
        );
        let f =
            parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m\"").expect("parses");
        let Filter::Compare { path, .. } = f else { panic!("compare expected") };
        assert_eq!(path.urn.as_deref(), Some(ENTERPRISE));
        assert_eq!(path.attr, "manager");
        assert_eq!(path.sub.as_deref(), Some("value"));
        let f = parse(r#"emails[type eq "work"].value eq "a@b""#).expect("parses");
        assert!(matches!(f, Filter::ValuePath { ref sub, .. } if sub.as_deref() == Some("value")));
    }

    #[test]
    fn validation_table() {
        use ResourceKind::{Group as G, User as U};
        let cases = [
            (U, r#"noSuchAttribute eq "x""#, false),
            (U, r#"members[value eq "x"]"#, false),
            (G, r#"userName eq "x""#, false),
            (U, r#"name.nope eq "x""#, false),
            (U, r#"emails[nope eq "x"]"#, false),
            (U, r#"emails[type eq "work"].nope eq "x""#, false),
            (U, r#"active gt true"#, false),
            (U, r#"name eq "x""#, false),
            (U, r#"userName[value eq "x"]"#, false),
            (U, r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:nope eq "x""#, false),
            (U, r#"urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "x""#, false),
            (U, r#"userName eq "x" and bogus pr"#, false),
            (U, r#"not (bogus pr)"#, false),
            (U, r#"urn:contoso:ext:1.0:User:anything eq "x""#, true),
            (G, r#"http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group:x pr"#, true),
            (G, r#"members.value eq "x" and externalId pr and meta.lastModified gt "2020-01-01T00:00:00Z""#, true),
            (U, r#"emails eq "x""#, true),
        ];
        for (kind, text, ok) in cases {
            let f = parse(text).unwrap_or_else(|e| panic!("parse {text}: {e}"));
            assert_eq!(validate(kind, &f).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn simple_eq_table() {
        let cases = [
            (r#"userName eq "bob""#, Some(("userName", "bob"))),
            (r#"USERNAME EQ "Bob""#, Some(("userName", "Bob"))),
            (r#"externalid eq "e1""#, Some(("externalId", "e1"))),
            (r#"displayName eq "g""#, Some(("displayName", "g"))),
            (r#"id eq "1""#, Some(("id", "1"))),
            (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob""#, Some(("userName", "bob"))),
            (r#"userName ne "bob""#, None),
            (r#"userName eq 5"#, None),
            (r#"name.givenName eq "bob""#, None),
            (r#"userName eq "a" and active eq true"#, None),
            (r#"emails[type eq "work"].value eq "a""#, None),
            (r#"nosuch eq "a""#, None),
        ];
        for (text, expected) in cases {
            let f = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got = simple_eq(&f);
            let expected = expected.map(|(a, v)| (a.to_string(), v.to_string()));
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(r#"emails[type eq "work"].value"#).expect("parses");
        assert_eq!(p.path.attr, "emails");
        assert_eq!(p.path.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        let p = parse_path("name.familyName").expect("parses");
        assert_eq!((p.path.attr.as_str(), p.path.sub.as_deref()), ("name", Some("familyName")));
        let p = parse_path(r#"members[value eq "2819c223"]"#).expect("parses");
        assert_eq!(eq_conjunction(p.filter.as_ref().expect("filter")), Some(vec![("value".into(), json!("2819c223"))]));
        for bad in ["", "emails[", "emails[type eq]", "a b", "name.givenName.x", r#"emails[type eq "w"] x"#, "(x)"] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some((0, 0)));
        assert_eq!(parse_datetime("2000-03-01T00:00:00.5Z"), Some((951_868_800, 500_000_000)));
        assert_eq!(parse_datetime("2011-05-13"), Some((1_305_244_800, 0)));
        assert_eq!(parse_datetime("2011-05-13T04:42Z"), parse_datetime("2011-05-13T04:42:00Z"));
        for bad in [
            "",
            "2011-13-01T00:00:00Z",
            "2011-05-13T4:42",
            "yesterday",
            "2011-05-13T04:42:34Zjunk",
            "2011-05-13T04:42:34.",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("userName".to_string()),
            Just("emails".to_string()),
            Just("name.givenName".to_string()),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value".to_string()),
            Just(".value".to_string()),
            Just("eq".to_string()),
            Just("PR".to_string()),
            Just("gt".to_string()),
            Just("and".to_string()),
            Just("OR".to_string()),
            Just("not".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("\"x\"".to_string()),
            Just("\"\\u00e9\\\"".to_string()),
            Just("\"".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("-1.5e3".to_string()),
            Just(" ".to_string()),
            "[ -~]{0,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_never_panics_on_random_text(input in "\\PC{0,80}") {
            let _ = parse(&input);
            let _ = parse_path(&input);
        }

        #[test]
        fn parse_never_panics_on_token_soup(tokens in proptest::collection::vec(token(), 0..40)) {
            let input = tokens.join(" ");
            if let Ok(f) = parse(&input) {
                let _ = validate(ResourceKind::User, &f);
                let _ = matches(ResourceKind::User, &f, &user());
                let _ = simple_eq(&f);
            }
            let glued = tokens.concat();
            let _ = parse(&glued);
            let _ = parse_path(&glued);
        }
    }

    #[test]
    fn eq_filters_escape_and_parse_back() {
        assert_eq!(eq_filter("userName", r#"a"b\c"#), r#"userName eq "a\"b\\c""#);
        for value in ["plain@x.com", r#"a"b\c"#, "", "with space"] {
            let parsed = parse(&eq_filter("emails.value", value)).unwrap();
            let Filter::Compare { path, op: CompareOp::Eq, value: Value::String(read) } = parsed else {
                panic!("{value}: not one comparison");
            };
            assert_eq!((path.attr.as_str(), path.sub.as_deref(), read.as_str()), ("emails", Some("value"), value));
        }
    }
}
