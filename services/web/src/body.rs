//! Reading a submission's body: the media type, then the body itself as a
//! JSON document or as form fields, with uploaded files set apart.
//!
//! Everything is bounded before it is built: the JSON nesting depth is
//! checked on the raw bytes (so a hostile document cannot exhaust the
//! stack), and fields are counted as they are read. Text must be valid
//! UTF-8; nothing is decoded "lossily", since a replaced character in a
//! name or an address would be silent corruption.
//!
//! A body spooled to disk (see [`crate::receive`]) is parsed from there:
//! multipart bodies are streamed, and an uploaded file larger than
//! `web.spool_threshold_bytes` goes to a spool file of its own, hashed as
//! it is written, so that it can be streamed to the object store under its
//! content address without ever being held whole.

use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
};

use crate::{
    problem::Problem,
    receive::{self, Content, Gate},
};

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
#[derive(Debug)]
pub struct Upload {
    pub field: String,
    pub file_name: String,
    pub media_type: String,
    pub data: UploadData,
}

/// An uploaded file's bytes.
#[derive(Debug)]
pub enum UploadData {
    Memory(Bytes),
    /// A large file, in an unnamed spool file positioned at its start.
    Spooled {
        file: File,
        sha256: [u8; 32],
        size: u64,
    },
}

#[derive(Debug)]
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

/// Parses `body` of `kind`; large uploaded files are spooled under `gate`'s
/// spool directory and threshold.
pub async fn parse(kind: &BodyKind, body: Content, limits: Limits, gate: &Gate) -> Result<Submission, Problem> {
    let whole = |body: Content| async {
        match body {
            Content::Memory(bytes) => Ok(bytes),
            // Authenticated by now, and bounded by `web.max_request_bytes`: a
            // JSON or form body is parsed whole (its text must fit in one
            // message anyway).
            Content::File(mut file) => {
                let mut out = Vec::new();
                file.read_to_end(&mut out)
                    .await
                    .map_err(|e| receive::disk_problem(&e))?;
                Ok(Bytes::from(out))
            }
        }
    };
    match kind {
        BodyKind::Json => parse_json(&whole(body).await?, limits).map(|v| Submission {
            payload: Payload::Json(v),
            uploads: Vec::new(),
        }),
        BodyKind::UrlEncoded => parse_urlencoded(&whole(body).await?, limits).map(|f| Submission {
            payload: Payload::Fields(f),
            uploads: Vec::new(),
        }),
        BodyKind::Multipart { boundary } => {
            let stream: BoxStream<'static, Result<Bytes, std::io::Error>> = match body {
                Content::Memory(bytes) => Box::pin(futures::stream::once(async move { Ok(bytes) })),
                Content::File(file) => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)),
            };
            parse_multipart(stream, boundary, limits, gate).await
        }
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

async fn parse_multipart(
    stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
    boundary: &str,
    limits: Limits,
    gate: &Gate,
) -> Result<Submission, Problem> {
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
        if let Some(file_name) = file_name {
            let data = read_file_part(field, limits, gate).await?;
            // A file input left empty in a browser form: no file.
            if !(file_name.is_empty() && matches!(&data, UploadData::Memory(b) if b.is_empty())) {
                uploads.push(Upload {
                    field: name,
                    file_name,
                    media_type,
                    data,
                });
            }
            continue;
        }
        let data = field.bytes().await.map_err(|e| multipart_problem(e, limits))?;
        let value = String::from_utf8(data.to_vec())
            .map_err(|_| Problem::malformed(format!("field `{}` is not valid UTF-8", printable(&name))))?;
        fields.push((name, value));
    }
    Ok(Submission {
        payload: Payload::Fields(fields),
        uploads,
    })
}

/// An uploaded file: in memory up to the gate's threshold, past it in a
/// spool file of its own, hashed as it is written.
async fn read_file_part(mut field: multer::Field<'_>, limits: Limits, gate: &Gate) -> Result<UploadData, Problem> {
    let mut memory = BytesMut::new();
    let mut spooled: Option<(File, Sha256, u64)> = None;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_problem(e, limits))? {
        if spooled.is_none() && memory.len() + chunk.len() > gate.threshold() {
            let mut file = receive::spool_file(gate.spool_dir().to_owned()).await?;
            file.write_all(&memory).await.map_err(|e| receive::disk_problem(&e))?;
            let hasher = Sha256::new_with_prefix(&memory);
            spooled = Some((file, hasher, memory.len() as u64));
            memory = BytesMut::new();
        }
        match &mut spooled {
            Some((file, hasher, size)) => {
                file.write_all(&chunk).await.map_err(|e| receive::disk_problem(&e))?;
                hasher.update(&chunk);
                *size += chunk.len() as u64;
            }
            None => memory.extend_from_slice(&chunk),
        }
    }
    let Some((mut file, hasher, size)) = spooled else {
        return Ok(UploadData::Memory(memory.freeze()));
    };
    file.flush().await.map_err(|e| receive::disk_problem(&e))?;
    file.rewind().await.map_err(|e| receive::disk_problem(&e))?;
    Ok(UploadData::Spooled {
        file,
        sha256: hasher.finalize().into(),
        size,
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
/// Client input quoted in an answer (see [`guichet_core::error::printable`]).
fn printable(s: &str) -> String {
    guichet_core::error::printable(s, 64)
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

    fn memory(body: impl Into<Bytes>) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        let body = body.into();
        Box::pin(futures::stream::once(async move { Ok(body) }))
    }

    /// A gate that spools parts over 1 KiB.
    fn gate() -> Gate {
        Gate::new(&crate::WebConfig {
            spool_threshold_bytes: 1024,
            ..crate::WebConfig::default()
        })
    }

    #[tokio::test]
    async fn a_large_file_part_is_spooled_and_hashed() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut body = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n".to_vec();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n--b--\r\n");
        // Fed in small chunks, as from the network or a spool file.
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(300).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let limits = Limits {
            max_file_bytes: 10_000,
            ..LIMITS
        };
        let s = parse_multipart(Box::pin(futures::stream::iter(chunks)), "b", limits, &gate())
            .await
            .unwrap();
        let [upload] = &mut s.uploads.try_into().unwrap();
        let UploadData::Spooled { file, sha256, size } = &mut upload.data else {
            panic!("not spooled: {:?}", upload.data)
        };
        assert_eq!(*size, 5000);
        assert_eq!(sha256[..], Sha256::digest(&data)[..]);
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn multipart_sets_files_apart() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"nom\"\r\n\r\nJosé\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"../x.png\"\r\n\
                    Content-Type: image/png\r\n\r\nPNGDATA\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"vide\"; filename=\"\"\r\n\r\n\r\n--b--\r\n";
        let s = parse_multipart(memory(body), "b", LIMITS, &gate()).await.unwrap();
        let Payload::Fields(fields) = s.payload else { panic!() };
        assert_eq!(fields, vec![("nom".into(), "José".into())]);
        assert_eq!(s.uploads.len(), 1);
        assert_eq!(s.uploads[0].media_type, "image/png");
        assert!(matches!(&s.uploads[0].data, UploadData::Memory(b) if &b[..] == b"PNGDATA"));
        let big = format!(
            "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n{}\r\n--b--\r\n",
            "x".repeat(101)
        );
        assert_eq!(
            parse_multipart(memory(big), "b", LIMITS, &gate())
                .await
                .unwrap_err()
                .kind,
            "too-large"
        );
    }
}
