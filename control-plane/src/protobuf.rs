//! Kubernetes' protobuf encoding, read for the objects kubectl sends that way to resources
//! served here: a Namespace (`kubectl create namespace`) and a Secret (`kubectl create
//! secret`). Typed client-go clients send `application/vnd.kubernetes.protobuf`: the bytes
//! `k8s\0`, then a `runtime.Unknown` message (1: typeMeta {1: apiVersion, 2: kind}, 2: raw,
//! 3: contentEncoding, 4: contentType) whose `raw` is the object's own message. For a
//! Namespace: 1: metadata, 2: spec {1: finalizers}; for a Secret: 1: metadata, 2: data (bytes
//! values, base64 in JSON), 3: type, 4: stringData, 5: immutable; ObjectMeta: 1: name,
//! 2: generateName, 3: namespace, 11: labels, 12: annotations (maps are repeated
//! {1: key, 2: value} entries). Other fields are skipped.
//!
//! The bytes are a client's allegation: every length is checked against what is left, and
//! anything malformed is a [`ProtoError`], never a panic.

use serde_json::{json, Map, Value};
use std::fmt;

/// Why a protobuf body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    NoMagic,
    /// A varint, length or tag runs past the end or is malformed.
    Truncated,
    /// A wire type this reader does not know (groups, or an invalid one).
    WireType(u8),
    /// A string field is not UTF-8.
    Utf8,
    /// An object of a kind this server does not read from protobuf.
    Kind(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::NoMagic => write!(f, "not a Kubernetes protobuf object (no k8s magic)"),
            ProtoError::Truncated => write!(f, "truncated or malformed protobuf"),
            ProtoError::WireType(t) => write!(f, "unsupported protobuf wire type {t}"),
            ProtoError::Utf8 => write!(f, "a protobuf string is not UTF-8"),
            ProtoError::Kind(k) => {
                write!(f, "protobuf bodies are read for Namespace and Secret only, not {k:?}")
            }
        }
    }
}

/// One field of a message, by wire type: varints carry their value, length-delimited ones
/// their bytes.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(ProtoError::Truncated)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::Truncated)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let tag = varint(&mut self.rest)?;
            let number = tag >> 3;
            let value = match tag & 7 {
                0 => Field::Varint(varint(&mut self.rest)?),
                1 | 5 => {
                    let n = if tag & 7 == 1 { 8 } else { 4 };
                    self.rest = self.rest.get(n..).ok_or(ProtoError::Truncated)?;
                    Field::Fixed
                }
                2 => {
                    let len = usize::try_from(varint(&mut self.rest)?).map_err(|_| ProtoError::Truncated)?;
                    let bytes = self.rest.get(..len).ok_or(ProtoError::Truncated)?;
                    self.rest = &self.rest[len..];
                    Field::Bytes(bytes)
                }
                t => return Err(ProtoError::WireType(t as u8)),
            };
            Ok((number, value))
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { rest: buf }
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    std::str::from_utf8(b).map(str::to_string).map_err(|_| ProtoError::Utf8)
}

/// A `map<string, string>` entry.
fn map_entry(b: &[u8]) -> Result<(String, String), ProtoError> {
    let (k, v) = bytes_entry(b)?;
    Ok((k, string(v)?))
}

/// A `map<string, bytes>` entry.
fn bytes_entry(b: &[u8]) -> Result<(String, &[u8]), ProtoError> {
    let (mut k, mut v) = (String::new(), &[][..]);
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(s)) => k = string(s)?,
            (2, Field::Bytes(s)) => v = s,
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ProtoError> {
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for f in fields(b) {
        match f? {
            // Go's encoder writes empty strings too; an empty field is an absent one.
            (n @ 1..=3, Field::Bytes(s)) if !s.is_empty() => {
                let key = ["name", "generateName", "namespace"][(n - 1) as usize];
                meta.insert(key.into(), json!(string(s)?));
            }
            (11, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                annotations.insert(k, json!(v));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

fn namespace(raw: &[u8]) -> Result<Value, ProtoError> {
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!("v1"));
    obj.insert("kind".into(), json!("Namespace"));
    obj.insert("metadata".into(), json!({}));
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(m)) => {
                obj.insert("metadata".into(), object_meta(m)?);
            }
            (2, Field::Bytes(spec)) => {
                let mut finalizers = Vec::new();
                for f in fields(spec) {
                    if let (1, Field::Bytes(s)) = f? {
                        finalizers.push(json!(string(s)?));
                    }
                }
                if !finalizers.is_empty() {
                    obj.insert("spec".into(), json!({"finalizers": finalizers}));
                }
            }
            (_, Field::Varint(_) | Field::Fixed | Field::Bytes(_)) => {}
        }
    }
    Ok(Value::Object(obj))
}

fn secret(raw: &[u8]) -> Result<Value, ProtoError> {
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!("v1"));
    obj.insert("kind".into(), json!("Secret"));
    obj.insert("metadata".into(), json!({}));
    let (mut data, mut string_data) = (Map::new(), Map::new());
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(m)) => {
                obj.insert("metadata".into(), object_meta(m)?);
            }
            (2, Field::Bytes(e)) => {
                let (k, v) = bytes_entry(e)?;
                data.insert(k, json!(crate::secret::encode_base64(v)));
            }
            (3, Field::Bytes(t)) if !t.is_empty() => {
                obj.insert("type".into(), json!(string(t)?));
            }
            (4, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                string_data.insert(k, json!(v));
            }
            (5, Field::Varint(b)) => {
                obj.insert("immutable".into(), json!(b != 0));
            }
            (_, Field::Varint(_) | Field::Fixed | Field::Bytes(_)) => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !string_data.is_empty() {
        obj.insert("stringData".into(), Value::Object(string_data));
    }
    Ok(Value::Object(obj))
}

/// Reads a protobuf-encoded object body into its JSON form.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let msg = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoMagic)?;
    let (mut kind, mut raw) = (String::new(), None);
    for f in fields(msg) {
        match f? {
            (1, Field::Bytes(tm)) => {
                for f in fields(tm) {
                    if let (2, Field::Bytes(k)) = f? {
                        kind = string(k)?;
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    match (kind.as_str(), raw) {
        ("Namespace", Some(r)) => namespace(r),
        ("Secret", Some(r)) => secret(r),
        _ => Err(ProtoError::Kind(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(n: u8, b: &[u8]) -> Vec<u8> {
        let mut v = vec![n << 3 | 2];
        let mut len = b.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                v.push(byte);
                break;
            }
            v.push(byte | 0x80);
        }
        v.extend_from_slice(b);
        v
    }

    fn namespace_body(name: &str) -> Vec<u8> {
        let label = [len_field(1, b"team"), len_field(2, b"a")].concat();
        let meta = [len_field(1, name.as_bytes()), len_field(2, b""), len_field(11, &label), vec![7 << 3, 1]]
            .concat();
        let raw = [len_field(1, &meta), len_field(2, &len_field(1, b"kubernetes"))].concat();
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Namespace")].concat();
        let unknown = [len_field(1, &type_meta), len_field(2, &raw), len_field(4, b"")].concat();
        [b"k8s\0".as_slice(), &unknown].concat()
    }

    #[test]
    fn reads_a_namespace_as_kubectl_sends_it() {
        let v = decode_object(&namespace_body("scratch")).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "scratch", "labels": {"team": "a"}},
                   "spec": {"finalizers": ["kubernetes"]}})
        );
    }

    /// What `kubectl create secret docker-registry regcred --docker-server=127.0.0.1:5000
    /// --docker-username=u --docker-password=p` sends (kubectl 1.32.4, from its `-v=9` dump).
    const KUBECTL_DOCKER_REGISTRY: &str = concat!(
        "6b3873000a0c0a0276311206536563726574129a010a170a077265676372656412001a0022002a00320038004200125f",
        "0a112e646f636b6572636f6e6669676a736f6e124a7b226175746873223a7b223132372e302e302e313a35303030223a",
        "7b22757365726e616d65223a2275222c2270617373776f7264223a2270222c2261757468223a2264547077227d7d7d1a",
        "1e6b756265726e657465732e696f2f646f636b6572636f6e6669676a736f6e1a002200",
    );

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    #[test]
    fn reads_secrets_as_kubectl_sends_them() {
        let v = decode_object(&hex(KUBECTL_DOCKER_REGISTRY)).unwrap();
        let config = r#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p","auth":"dTpw"}}}"#;
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
                   "data": {".dockerconfigjson": crate::secret::encode_base64(config.as_bytes())},
                   "type": "kubernetes.io/dockerconfigjson"})
        );
        // `kubectl create secret generic x --from-literal=a=b`: no type; and stringData,
        // immutable as a client could send them.
        let meta = len_field(1, &len_field(1, b"x"));
        let entry = |n, k: &[u8], v: &[u8]| len_field(n, &[len_field(1, k), len_field(2, v)].concat());
        let raw =
            [meta, entry(2, b"a", b"\xff\x00"), len_field(3, b""), entry(4, b"s", b"plain"), vec![5 << 3, 1]]
                .concat();
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Secret")].concat();
        let body = [b"k8s\0".as_slice(), &len_field(1, &type_meta), &len_field(2, &raw)].concat();
        assert_eq!(
            decode_object(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"a": "/wA="},
                   "stringData": {"s": "plain"}, "immutable": true})
        );
        for cut in 4..body.len() {
            let _ = decode_object(&body[..cut]);
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(decode_object(b"{}"), Err(ProtoError::NoMagic));
        let good = namespace_body("x");
        for cut in 4..good.len() {
            // Every truncation is an error or a smaller object, never a panic.
            let _ = decode_object(&good[..cut]);
        }
        assert_eq!(
            decode_object(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            Err(ProtoError::Truncated)
        );
        assert_eq!(decode_object(b"k8s\0\x0b"), Err(ProtoError::WireType(3)));
        let pod = [b"k8s\0".as_slice(), &len_field(1, &len_field(2, b"Pod"))].concat();
        assert_eq!(decode_object(&pod), Err(ProtoError::Kind("Pod".into())));
        let bad_utf8 = [b"k8s\0".as_slice(), &len_field(1, &len_field(2, b"\xff"))].concat();
        assert_eq!(decode_object(&bad_utf8), Err(ProtoError::Utf8));
    }
}
