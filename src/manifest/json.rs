//! The manifest's JSON, streamed both ways, for manifests of any length (160,000 shards of a
//! 10 TiB stream make 43 MiB of JSON).
//!
//! [`Manifest::write_json`] serializes the shards one by one into the writer, and the
//! canonical form (compact, keys sorted) into a SHA-256 for the checksum; only a shard at a
//! time is ever a JSON value. [`Manifest::from_json`] checks the checksum over slices of the
//! input ([`RawValue`]: an object's keys are sorted, every scalar is re-serialized as a JSON
//! value would be) and then parses the typed manifest straight from the bytes. Neither builds
//! the whole manifest as a `serde_json::Value` tree, which took ten times the text's size.
//!
//! The bytes are those of a manifest serialized through a `serde_json::Value` (keys sorted,
//! pretty-printed), so formats 1 and 2 read and write as before.

use super::{Manifest, ShardRecord, FORMAT_VERSION, OLDEST_FORMAT};
use crate::hashing::Sha256Writer;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

/// A JSON object's members as slices of the input, keys sorted.
type RawObject<'a> = BTreeMap<String, &'a RawValue>;

impl Manifest {
    /// The manifest as written to providers; format 2 and later with a fresh checksum. One
    /// buffer of the text's size: [`Manifest::write_json`] streams it into a writer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out)
            .expect("a manifest always serializes into memory");
        out
    }

    /// Writes [`Manifest::to_json`]'s bytes into `w` as they are produced.
    pub fn write_json<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        let clear = self.in_the_clear();
        let mut doc = Document::new(&clear);
        if clear.format >= 2 {
            let mut sum = Sha256Writer::default();
            serde_json::to_writer(&mut sum, &doc)?;
            doc.checksum = Some(sum.finish());
        }
        serde_json::to_writer_pretty(&mut w, &doc)?;
        w.write_all(b"\n")
    }

    /// Parses and checks a manifest: known format, its checksum (format 2), a valid id,
    /// contiguous shards.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let parse_error = |e: serde_json::Error| format!("manifest does not parse: {e}");
        let mut top: RawObject = match serde_json::from_slice(bytes) {
            Ok(top) => top,
            Err(e) if e.is_data() => {
                return Err("manifest does not parse: not a JSON object".into())
            }
            Err(e) => return Err(parse_error(e)),
        };
        let format = check_format(top.get("format").copied())?;
        let stored = top.remove("checksum");
        if format != 1 {
            check_checksum(&top, stored)?;
        }
        drop(top);
        // Unknown keys (the checksum, fields a later offsite adds) are ignored.
        let m: Manifest = serde_json::from_slice(bytes).map_err(parse_error)?;
        if m.id().is_none() {
            return Err(format!(
                "manifest has an invalid backup_id {:?}",
                m.backup_id
            ));
        }
        m.check_shards()?;
        m.check_encoding()?;
        m.check_erasure()?;
        Ok(m)
    }

    /// Every field but the shards: the small part of a manifest, however long the stream.
    /// (Every field is named, so a new one cannot be forgotten here.)
    fn without_shards(&self) -> Manifest {
        Manifest {
            format: self.format,
            host: self.host.clone(),
            dataset: self.dataset.clone(),
            backup_id: self.backup_id.clone(),
            kind: self.kind,
            source_kind: self.source_kind.clone(),
            source: self.source.clone(),
            snapshot: self.snapshot.clone(),
            parent: self.parent.clone(),
            created: self.created.clone(),
            shard_size: self.shard_size,
            total_bytes: self.total_bytes,
            shards: Vec::new(),
            tool: self.tool.clone(),
            encoding: self.encoding,
            recipients: self.recipients.clone(),
            sealed: self.sealed.clone(),
            erasure: self.erasure.clone(),
        }
    }
}

/// A manifest as its JSON object, keys in sorted order: the small fields as one JSON value,
/// the shards serialized one at a time, and the checksum once known.
struct Document<'a> {
    head: Map<String, Value>,
    shards: &'a [ShardRecord],
    checksum: Option<String>,
}

impl<'a> Document<'a> {
    fn new(m: &'a Manifest) -> Self {
        let head = serde_json::to_value(m.without_shards()).expect("a manifest always serializes");
        let Value::Object(mut head) = head else {
            unreachable!("a manifest serializes to a JSON object")
        };
        head.remove("shards");
        Document {
            head,
            shards: &m.shards,
            checksum: None,
        }
    }
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        enum Member<'b> {
            Value(Cow<'b, Value>),
            Shards,
            Checksum(&'b str),
        }
        let mut members: BTreeMap<&str, Member> = (self.head.iter())
            .map(|(k, v)| (k.as_str(), Member::Value(canon(v))))
            .collect();
        members.insert("shards", Member::Shards);
        if let Some(c) = &self.checksum {
            members.insert("checksum", Member::Checksum(c));
        }
        let mut map = s.serialize_map(Some(members.len()))?;
        for (k, member) in &members {
            match member {
                Member::Value(v) => map.serialize_entry(k, v)?,
                Member::Shards => map.serialize_entry(k, &Shards(self.shards))?,
                Member::Checksum(c) => map.serialize_entry(k, c)?,
            }
        }
        map.end()
    }
}

/// The shard list, each shard a JSON value with sorted keys only while it is written.
struct Shards<'a>(&'a [ShardRecord]);

impl Serialize for Shards<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for shard in self.0 {
            let v = serde_json::to_value(shard).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(&canon(&v))?;
        }
        seq.end()
    }
}

/// `v` with every object's keys in sorted order, whatever order the map type keeps
/// (serde_json's `preserve_order` feature may be on through another crate); borrowed when
/// they already are.
fn canon(v: &Value) -> Cow<'_, Value> {
    fn sorted_deep(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b) && m.values().all(sorted_deep)
            }
            Value::Array(a) => a.iter().all(sorted_deep),
            _ => true,
        }
    }
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    match sorted_deep(v) {
        true => Cow::Borrowed(v),
        false => Cow::Owned(sort(v)),
    }
}

/// The manifest's `format`, when this offsite reads it.
fn check_format(format: Option<&RawValue>) -> Result<u64, String> {
    let format: Option<Value> = match format {
        Some(f) => Some(
            serde_json::from_str(f.get()).map_err(|e| format!("manifest does not parse: {e}"))?,
        ),
        None => None,
    };
    match format.as_ref().and_then(Value::as_u64) {
        Some(f) if (OLDEST_FORMAT as u64..=FORMAT_VERSION as u64).contains(&f) => Ok(f),
        _ => Err(format!(
            "manifest format {} is not supported by this offsite (reads {OLDEST_FORMAT} to {FORMAT_VERSION}); upgrade offsite",
            format.map_or("(none)".to_string(), |f| f.to_string())
        )),
    }
}

/// A format-2 manifest's `checksum` (taken out of `top`) matches the rest of it.
fn check_checksum(top: &RawObject, stored: Option<&RawValue>) -> Result<(), String> {
    let stored: Option<Value> = stored.and_then(|c| serde_json::from_str(c.get()).ok());
    let Some(stored) = stored.as_ref().and_then(Value::as_str) else {
        return Err("manifest is damaged: format 2 but no checksum".into());
    };
    let mut sum = Sha256Writer::default();
    write_object(top, &mut sum, 0).map_err(|e| format!("manifest does not parse: {e}"))?;
    match sum.finish() == stored {
        true => Ok(()),
        false => Err("manifest is damaged: its checksum does not match its content".into()),
    }
}

/// How deep objects and arrays may nest in a manifest (serde_json's own limit for values).
const MAX_DEPTH: usize = 128;

/// Writes a JSON value given as text in its canonical form: compact, every object's keys
/// sorted, every scalar as `serde_json` writes it. Each object or array is split into slices
/// of its members, so nothing but one scalar at a time is parsed into a value.
fn write_canonical(raw: &RawValue, w: &mut impl Write, depth: usize) -> serde_json::Result<()> {
    let text = raw.get().trim_start();
    if depth >= MAX_DEPTH && (text.starts_with('{') || text.starts_with('[')) {
        return Err(serde::de::Error::custom("nested too deeply"));
    }
    match text.as_bytes().first() {
        Some(b'{') => write_object(&serde_json::from_str(text)?, w, depth + 1),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            put(w, b"[")?;
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    put(w, b",")?;
                }
                write_canonical(item, w, depth + 1)?;
            }
            put(w, b"]")
        }
        _ => serde_json::to_writer(w, &serde_json::from_str::<Value>(text)?),
    }
}

fn write_object(members: &RawObject, w: &mut impl Write, depth: usize) -> serde_json::Result<()> {
    put(w, b"{")?;
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            put(w, b",")?;
        }
        serde_json::to_writer(&mut *w, k)?;
        put(w, b":")?;
        write_canonical(v, w, depth)?;
    }
    put(w, b"}")
}

fn put(w: &mut impl Write, bytes: &[u8]) -> serde_json::Result<()> {
    w.write_all(bytes).map_err(serde_json::Error::io)
}

/// The checksum of a manifest's JSON object without its `checksum` key: SHA-256 of its compact
/// form with every object's keys sorted. (Tests build manifests with it.)
#[cfg(test)]
pub(super) fn checksum_of(map: &Map<String, Value>) -> String {
    let canonical = canon(&Value::Object(map.clone())).into_owned();
    crate::hashing::sha256(&serde_json::to_vec(&canonical).expect("a value serializes"))
}
