//! The response documents, assembled from bytes. A cached purchase and its
//! package are stored as JSON ([`PurchaseView`], [`PackageView`]); the API
//! answers them by splicing those bytes (`{...purchase, "package": {...}}`)
//! instead of parsing and re-serialising, and reads only the few numbers it
//! needs ([`Head`]) with a borrowing parse. Documents built from MySQL rows
//! are serialised once with the same serde types, so both sources give the
//! same bytes. Pure.

use bytes::{BufMut, Bytes, BytesMut};
use paystream_core::readmodel::{Cursor, PackageView, PurchaseView};
use serde::{Deserialize, Serialize};

/// The numbers of a purchase document the API decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Head {
    /// Purchase id.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// Package bought.
    pub package_id: u64,
    /// Row version.
    pub version: u64,
}

/// Reads the [`Head`] of a purchase document.
pub fn head(doc: &[u8]) -> Option<Head> {
    serde_json::from_slice(doc).ok()
}

/// A view serialised as the read model stores it.
pub fn to_bytes<T: Serialize>(view: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(view).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Bytes of a purchase view.
pub fn purchase_bytes(v: &PurchaseView) -> Bytes {
    to_bytes(v)
}

/// Bytes of a package view.
pub fn package_bytes(v: &PackageView) -> Bytes {
    to_bytes(v)
}

fn object_body(doc: &[u8]) -> Option<&[u8]> {
    let start = doc.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = doc.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let inner = doc.get(start..=end)?;
    (inner.len() >= 2 && inner[0] == b'{' && inner[inner.len() - 1] == b'}')
        .then(|| &inner[1..inner.len() - 1])
}

/// Appends `{<purchase members>,"package":<package>}` to `out`. Returns false
/// (and appends nothing) when either document is not a JSON object.
pub fn put_purchase(out: &mut BytesMut, purchase: &[u8], package: &[u8]) -> bool {
    let (Some(p), Some(_)) = (object_body(purchase), object_body(package)) else {
        return false;
    };
    out.reserve(p.len() + package.len() + 16);
    out.put_u8(b'{');
    out.put_slice(p);
    if !p.iter().all(u8::is_ascii_whitespace) {
        out.put_u8(b',');
    }
    out.put_slice(b"\"package\":");
    out.put_slice(package);
    out.put_u8(b'}');
    true
}

/// One purchase with its package.
pub fn purchase(purchase: &[u8], package: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(purchase.len() + package.len() + 16);
    put_purchase(&mut out, purchase, package).then(|| out.freeze())
}

/// A page of purchases: `{"items":[...],"next_cursor":...}`.
pub fn page<'a>(
    items: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    next: Option<Cursor>,
) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(1024);
    out.put_slice(b"{\"items\":[");
    for (i, (p, k)) in items.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        if !put_purchase(&mut out, p, k) {
            return None;
        }
    }
    out.put_slice(b"],\"next_cursor\":");
    match next {
        Some(c) => {
            out.put_u8(b'"');
            out.put_slice(c.encode().as_bytes());
            out.put_u8(b'"');
        }
        None => out.put_slice(b"null"),
    }
    out.put_u8(b'}');
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::{DateTime, Utc};
    use paystream_core::model::PurchaseStatus;

    fn view() -> PurchaseView {
        let t: DateTime<Utc> = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        PurchaseView {
            id: 5,
            user_id: 6,
            package_id: 7,
            quantity: 2,
            amount: "39.98".parse().unwrap(),
            currency: "EUR".into(),
            status: PurchaseStatus::Pending,
            created_at: t,
            updated_at: t,
            version: 3,
        }
    }

    fn package() -> PackageView {
        PackageView {
            id: 7,
            code: "gold".into(),
            name: "Gold \"plus\"".into(),
            price: "19.99".parse().unwrap(),
            currency: "EUR".into(),
            active: true,
            version: 1,
        }
    }

    #[test]
    fn splices_a_purchase_and_its_package() {
        let p = purchase_bytes(&view());
        let k = package_bytes(&package());
        let out = purchase(&p, &k).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["amount"], "39.98");
        assert_eq!(v["package"]["name"], "Gold \"plus\"");
        assert_eq!(
            head(&p),
            Some(Head {
                id: 5,
                user_id: 6,
                package_id: 7,
                version: 3
            })
        );
        assert!(purchase(b"[1]", &k).is_none());
        assert!(purchase(&p, b"null").is_none());
        assert_eq!(head(b"{\"id\":1}"), None);
    }

    #[test]
    fn builds_pages() {
        let p = purchase_bytes(&view());
        let k = package_bytes(&package());
        let c = Cursor { score: 10, id: 5 };
        let out = page([(&p[..], &k[..]), (&p[..], &k[..])], Some(c)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
        assert_eq!(v["next_cursor"], c.encode());
        let out = page(std::iter::empty(), None).unwrap();
        assert_eq!(&out[..], b"{\"items\":[],\"next_cursor\":null}");
    }
}
