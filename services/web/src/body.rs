//! Reading a submission's body: the media type, then the body itself as a
//! JSON document or as form fields, with uploaded files set apart.
//!
//! Everything is bounded before it is built: the JSON nesting depth is
//! checked on the raw bytes (so a hostile document cannot exhaust the
//! stack), and fields are counted as they are read. Text must be valid
//! UTF-8; nothing is decoded "lossily", since a replaced character in a
//! name or an address would be silent corruption.

use std::convert::Infallible;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use crate::problem::Problem;

/// The body kinds accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    UrlEncoded,
    Multipart { boundary: String },
}

impl BodyKind {
    /// From the `Content-Type` header.
    pub fn of(headers: &HeaderMap) -> Result<Self, Problem> {
        const ACCEPTED: &str = "send `application/json`, `application/x-www-form-urlencoded` or `multipart/form-data`";
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Err(Problem::unsupported_media_type(format!("no Content-Type: {ACCEPTED}")));
        };
        let value = value
            .to_str()
            .map_err(|_| Problem::unsupported_media_type(format!("unreadable Content-Type: {ACCEPTED}")))?;
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        for param in parts {
            if let Some((name, v)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("charset")
            {
                let charset = v.trim().trim_matches('"');
                if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                    return Err(Problem::unsupported_media_type("only the UTF-8 charset is accepted"));
                }
            }
        }
        let is_json =
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
        if is_json {
            Ok(BodyKind::Json)
        } else if essence == "application/x-www-form-urlencoded" {
            Ok(BodyKind::UrlEncoded)
        } else if essence == "multipart/form-data" {
            let boundary = multer::parse_boundary(value)
                .map_err(|_| Problem::malformed("multipart/form-data without a `boundary` parameter"))?;
            Ok(BodyKind::Multipart { boundary })
        } else {
            Err(Problem::unsupported_media_type(format!(
                "`{}` is not accepted: {ACCEPTED}",
                essence
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect::<String>()
            )))
        }
    }
}

/// What the body says, by kind.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A JSON object.
    Json(Value),
    /// Form fields in order; a name may repeat.
    Fields(Vec<(String, String)>),
}

/// A file sent in a multipart body.
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: String,
    pub file_name: String,
    pub media_type: String,
    pub data: Bytes,
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub payload: Payload,
    pub uploads: Vec<Upload>,
}

/// Bounds applied while reading.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_fields: usize,
    pub max_json_depth: usize,
    pub max_file_bytes: usize,
}

/// Parses `body` of `kind`.
pub async fn parse(kind: &BodyKind, body: Bytes, limits: Limits) -> Result<Submission, Problem> {
    match kind {
        BodyKind::Json => parse_json(&body, limits).map(|v| Submission {
            payload: Payload::Json(v),
            uploads: Vec::new(),
        }),
        BodyKind::UrlEncoded => parse_urlencoded(&body, limits).map(|f| Submission {
            payload: Payload::Fields(f),
            uploads: Vec::new(),
        }),
        BodyKind::Multipart { boundary } => parse_multipart(body, boundary, limits).await,
    }
}

fn parse_json(body: &[u8], limits: Limits) -> Result<Value, Problem> {
    if depth_exceeds(body, limits.max_json_depth) {
        return Err(Problem::too_deep(limits.max_json_depth));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| Problem::malformed(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Problem::malformed("the JSON body must be an object (`{ ... }`)"));
    }
    let mut count = 0usize;
    if count_exceeds(&value, &mut count, limits.max_fields) {
        return Err(Problem::too_many_fields(limits.max_fields));
    }
    Ok(value)
}

/// Whether objects and arrays nest deeper than `max`, outside strings.
fn depth_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Counts object members and array items, stopping past `max`.
fn count_exceeds(value: &Value, count: &mut usize, max: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Object(map) => Box::new(map.values()),
        Value::Array(items) => Box::new(items.iter()),
        _ => return false,
    };
    for child in children {
        *count += 1;
        if *count > max || count_exceeds(child, count, max) {
            return true;
        }
    }
    false
}

fn parse_urlencoded(body: &[u8], limits: Limits) -> Result<Vec<(String, String)>, Problem> {
    let mut fields = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if fields.len() == limits.max_fields {
            return Err(Problem::too_many_fields(limits.max_fields));
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[..0]),
        };
        let name = String::from_utf8(percent_decode(name))
            .map_err(|_| Problem::malformed("a field name is not valid UTF-8"))?;
        let value = String::from_utf8(percent_decode(value))
            .map_err(|_| Problem::malformed(format!("field `{}` is not valid UTF-8", printable(&name))))?;
        fields.push((name, value));
    }
    Ok(fields)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; a `%` not followed by two hex digits stays as it is (WHATWG).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                raw.get(i + 1).and_then(|&b| hex(b)),
                raw.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

async fn parse_multipart(body: Bytes, boundary: &str, limits: Limits) -> Result<Submission, Problem> {
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().per_field(limits.max_file_bytes as u64));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut fields = Vec::new();
    let mut uploads = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_problem(e, limits)),
        };
        if fields.len() + uploads.len() == limits.max_fields {
            return Err(Problem::too_many_fields(limits.max_fields));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let media_type = field
            .content_type()
            .map(|m| m.essence_str().to_owned())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let data = field.bytes().await.map_err(|e| multipart_problem(e, limits))?;
        match file_name {
            // A file input left empty in a browser form: no file.
            Some(f) if f.is_empty() && data.is_empty() => {}
            Some(file_name) => uploads.push(Upload {
                field: name,
                file_name,
                media_type,
                data,
            }),
            None => {
                let value = String::from_utf8(data.to_vec())
                    .map_err(|_| Problem::malformed(format!("field `{}` is not valid UTF-8", printable(&name))))?;
                fields.push((name, value));
            }
        }
    }
    Ok(Submission {
        payload: Payload::Fields(fields),
        uploads,
    })
}

fn multipart_problem(e: multer::Error, limits: Limits) -> Problem {
    match e {
        multer::Error::FieldSizeExceeded { .. } => Problem::too_large(format!(
            "a file or field is larger than the limit of {} bytes per file",
            limits.max_file_bytes
        )),
        multer::Error::StreamSizeExceeded { .. } => Problem::too_large("the body is larger than the limit"),
        _ => Problem::malformed(format!("invalid multipart/form-data body: {e}")),
    }
}

/// A name from the outside, safe to echo in an answer.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_fields: 10,
        max_json_depth: 4,
        max_file_bytes: 100,
    };

    fn kind(ct: &str) -> Result<BodyKind, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        BodyKind::of(&headers)
    }

    #[test]
    fn media_types() {
        assert_eq!(kind("application/json; charset=UTF-8").unwrap(), BodyKind::Json);
        assert_eq!(kind("application/merge+json").unwrap(), BodyKind::Json);
        assert_eq!(kind("Application/X-WWW-Form-Urlencoded").unwrap(), BodyKind::UrlEncoded);
        assert_eq!(
            kind("multipart/form-data; boundary=xyz").unwrap(),
            BodyKind::Multipart { boundary: "xyz".into() }
        );
        assert_eq!(kind("text/plain").unwrap_err().kind, "unsupported-media-type");
        assert_eq!(
            kind("application/json; charset=latin1").unwrap_err().kind,
            "unsupported-media-type"
        );
        assert_eq!(kind("multipart/form-data").unwrap_err().kind, "malformed-body");
        assert_eq!(
            BodyKind::of(&HeaderMap::new()).unwrap_err().kind,
            "unsupported-media-type"
        );
    }

    #[test]
    fn json_depth_and_field_count_are_bounded() {
        assert!(parse_json(br#"{"a":{"b":{"c":[1]}}}"#, LIMITS).is_ok());
        assert_eq!(
            parse_json(br#"{"a":{"b":{"c":[[1]]}}}"#, LIMITS).unwrap_err().kind,
            "too-deeply-nested"
        );
        // Brackets inside strings do not count.
        assert!(parse_json(br#"{"a":"[[[[[[{{{{\"[["}"#, LIMITS).is_ok());
        let wide = format!(
            "{{{}}}",
            (0..11).map(|i| format!("\"f{i}\":1")).collect::<Vec<_>>().join(",")
        );
        assert_eq!(parse_json(wide.as_bytes(), LIMITS).unwrap_err().kind, "too-many-fields");
        assert_eq!(parse_json(b"[1]", LIMITS).unwrap_err().kind, "malformed-body");
        assert_eq!(parse_json(b"{\"a\":", LIMITS).unwrap_err().kind, "malformed-body");
    }

    #[test]
    fn urlencoded_is_strict_utf8() {
        let fields = parse_urlencoded(b"nom=Jos%C3%A9+Dupont&email=a%40b.fr&flag&pct=100%", LIMITS).unwrap();
        assert_eq!(
            fields,
            vec![
                ("nom".into(), "José Dupont".into()),
                ("email".into(), "a@b.fr".into()),
                ("flag".into(), String::new()),
                ("pct".into(), "100%".into()),
            ]
        );
        let err = parse_urlencoded(b"nom=Jos%E9", LIMITS).unwrap_err();
        assert_eq!(err.kind, "malformed-body");
        assert!(err.detail.contains("`nom`"), "{}", err.detail);
        let many: Vec<u8> = (0..11)
            .map(|i| format!("f{i}=1"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes();
        assert_eq!(parse_urlencoded(&many, LIMITS).unwrap_err().kind, "too-many-fields");
    }

    #[tokio::test]
    async fn multipart_sets_files_apart() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"nom\"\r\n\r\nJosé\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"../x.png\"\r\n\
                    Content-Type: image/png\r\n\r\nPNGDATA\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"vide\"; filename=\"\"\r\n\r\n\r\n--b--\r\n";
        let s = parse_multipart(Bytes::from(body), "b", LIMITS).await.unwrap();
        let Payload::Fields(fields) = s.payload else { panic!() };
        assert_eq!(fields, vec![("nom".into(), "José".into())]);
        assert_eq!(s.uploads.len(), 1);
        assert_eq!(s.uploads[0].media_type, "image/png");
        assert_eq!(&s.uploads[0].data[..], b"PNGDATA");
        let big = format!(
            "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n{}\r\n--b--\r\n",
            "x".repeat(101)
        );
        assert_eq!(
            parse_multipart(Bytes::from(big), "b", LIMITS).await.unwrap_err().kind,
            "too-large"
        );
    }
}
