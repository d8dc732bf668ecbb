//! The OpenAPI 3 document of the API, committed as `agent/openapi.json`
//! and served as it is at `GET /openapi.json`.

/// The document's text.
pub const DOCUMENT: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use std::collections::BTreeSet;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn every_served_route_is_documented_and_every_documented_route_served() -> TestResult {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT)?;
        let paths = doc["paths"].as_object().ok_or("no paths")?;
        let mut documented = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().ok_or("path item not an object")?.keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<_> = crate::routes::table()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(served, documented);
        Ok(())
    }

    #[test]
    fn only_the_document_itself_is_served_without_the_token() -> TestResult {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT)?;
        for r in crate::routes::table() {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            let open = op["security"].as_array().is_some_and(|s| s.is_empty());
            assert_eq!(open, r.public, "{} {}", r.method, r.path);
        }
        Ok(())
    }

    #[test]
    fn every_reference_resolves() -> TestResult {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT)?;
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r
                .strip_prefix('#')
                .ok_or("a reference outside the document")?;
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        Ok(())
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod docs {
    /// The operator's page, which must name every call.
    const AGENT_MD: &str = include_str!("../../docs/agent.md");

    #[test]
    fn docs_agent_md_names_every_route() {
        for r in crate::routes::table() {
            let named = format!("`{} {}", r.method, r.path);
            assert!(AGENT_MD.contains(&named), "docs/agent.md lacks {named}");
        }
    }
}
