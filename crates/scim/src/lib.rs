//! The SCIM 2.0 protocol layer (RFC 7643/7644): schemas, filters, PATCH, list responses, discovery
//! documents, errors, and the managed part of a user document (`document`: projection, merge, diff).
//! Pure functions over JSON; it knows nothing of vendors or storage. The gateway serves with it, the
//! vendor-side SCIM client and the simulators speak it.

pub mod discovery;
pub mod document;
pub mod error;
pub mod filter;
pub mod patch;
pub mod schema;

use serde_json::{json, Value};

pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Largest page the gateway returns; advertised as `filter.maxResults`.
pub const MAX_RESULTS: usize = 1000;

/// Query parameters of a list or read (`filter`, `startIndex`, `count`, `attributes`, `excludedAttributes`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    pub filter: Option<String>,
    pub start_index: usize,
    pub count: Option<usize>,
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

impl ListQuery {
    /// From a raw query string. `+` decodes as a space; parameter names are case-insensitive; unknown
    /// parameters (e.g. Entra's `aadOptscim062020` flag) are ignored. Bad numbers are an `invalidValue`.
    pub fn parse(raw: Option<&str>) -> Result<ListQuery, error::ScimError> {
        let mut q = ListQuery { start_index: 1, ..Default::default() };
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = Some(v.into_owned()),
                "startindex" => {
                    let n: i64 = v.trim().parse().map_err(|_| {
                        error::ScimError::invalid_value(format!("startIndex must be an integer, got '{v}'"))
                    })?;
                    // RFC 7644 §3.4.2.4: a value below 1 is read as 1.
                    q.start_index = n.max(1) as usize;
                }
                "count" => {
                    let n: i64 = v
                        .trim()
                        .parse()
                        .map_err(|_| error::ScimError::invalid_value(format!("count must be an integer, got '{v}'")))?;
                    q.count = Some(n.clamp(0, MAX_RESULTS as i64) as usize);
                }
                "attributes" => q.attributes = split_list(&v),
                "excludedattributes" => q.excluded_attributes = split_list(&v),
                _ => {}
            }
        }
        Ok(q)
    }

    /// From a POST .search body (RFC 7644 §3.4.3).
    pub fn from_search_body(body: &Value) -> Result<ListQuery, error::ScimError> {
        let mut q = ListQuery { start_index: 1, ..Default::default() };
        let Some(obj) = body.as_object() else {
            return Err(error::ScimError::invalid_syntax("a search request must be a JSON object"));
        };
        for (k, v) in obj {
            let list = |v: &Value| -> Vec<String> {
                match v {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
                    Value::String(s) => split_list(s),
                    _ => Vec::new(),
                }
            };
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = v.as_str().map(String::from),
                "startindex" => q.start_index = v.as_i64().unwrap_or(1).max(1) as usize,
                "count" => q.count = v.as_i64().map(|n| n.clamp(0, MAX_RESULTS as i64) as usize),
                "attributes" => q.attributes = list(v),
                "excludedattributes" => q.excluded_attributes = list(v),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A ListResponse page of already projected resources.
/// The slice of a result that one list request returns: `startIndex` (1-based) and `count`, capped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ListWindow {
    /// Results before the page.
    pub skip: usize,
    /// Results on the page at most.
    pub len: usize,
}

impl ListWindow {
    pub fn of(q: &ListQuery) -> ListWindow {
        ListWindow { skip: q.start_index.saturating_sub(1), len: q.count.unwrap_or(MAX_RESULTS).min(MAX_RESULTS) }
    }

    /// Whether the result at 0-based position `i` is on the page.
    pub fn holds(&self, i: usize) -> bool {
        i >= self.skip && i - self.skip < self.len
    }
}

/// A ListResponse of every result, paged here.
pub fn list_response(all: Vec<Value>, q: &ListQuery) -> Value {
    let w = ListWindow::of(q);
    let total = all.len();
    list_page_response(all.into_iter().skip(w.skip).take(w.len).collect(), total, q)
}

/// A ListResponse of one page already cut (by the store) out of `total` results.
pub fn list_page_response(page: Vec<Value>, total: usize, q: &ListQuery) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": q.start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes_plus_and_ignores_case_and_unknowns() {
        let q = ListQuery::parse(Some(
            "aadOptscim062020&Filter=userName+eq+%22a%20b%22&STARTINDEX=0&count=5000&excludedAttributes=members,+meta",
        ))
        .unwrap();
        assert_eq!(q.filter.as_deref(), Some("userName eq \"a b\""));
        assert_eq!(q.start_index, 1);
        assert_eq!(q.count, Some(MAX_RESULTS));
        assert_eq!(q.excluded_attributes, ["members", "meta"]);
        assert!(ListQuery::parse(Some("count=abc")).is_err());
        assert_eq!(ListQuery::parse(Some("count=-3")).unwrap().count, Some(0));
    }

    #[test]
    fn pages_are_one_based() {
        let all: Vec<Value> = (1..=5).map(|i| json!({"id": i.to_string()})).collect();
        let q = ListQuery { start_index: 2, count: Some(2), ..Default::default() };
        let page = list_response(all.clone(), &q);
        assert_eq!(page["totalResults"], 5);
        assert_eq!(page["itemsPerPage"], 2);
        assert_eq!(page["Resources"][0]["id"], "2");
        let past_end = list_response(all, &ListQuery { start_index: 9, ..Default::default() });
        assert_eq!(past_end["Resources"], json!([]));
        assert_eq!(past_end["totalResults"], 5);
    }
}
