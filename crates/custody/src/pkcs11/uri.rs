//! PKCS#11 URIs (RFC 7512): `pkcs11:token=…;object=…;id=%01%02…;type=private`,
//! with hsmls's vendor query attributes (`?x-hsmls-…=…`, RFC 7512 §2.3
//! allows `x-` attributes) for wrapped HPKE keys.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::CustodyError;

/// Longest URI accepted (a wrapped HPKE key makes a URI of about 600 bytes).
pub const MAX_URI_LEN: usize = 4096;

/// Characters left unescaped: RFC 3986 unreserved.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Vendor query attribute: the HPKE private key wrapped (CKM_AES_KEY_WRAP_PAD)
/// under the token-resident wrapping key, hex.
pub const Q_WRAPPED: &str = "x-hsmls-wrapped";
/// Vendor query attribute: CKA_ID of the wrapping key, hex.
pub const Q_WRAPPING_KEY: &str = "x-hsmls-wrapping-key";
/// Vendor query attribute: the public key, uncompressed SEC1, hex.
pub const Q_PUBLIC: &str = "x-hsmls-public";

/// The parts of a PKCS#11 URI that hsmls uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `object=`: the object label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the object identifier (CKA_ID).
    pub id: Option<Vec<u8>>,
    /// `type=`: `private`, `public`, `secret-key`, `cert` or `data`.
    pub object_type: Option<String>,
    /// `x-hsmls-wrapped`: a wrapped HPKE private key.
    pub wrapped: Option<Vec<u8>>,
    /// `x-hsmls-wrapping-key`: CKA_ID of the key that wrapped it.
    pub wrapping_key_id: Option<Vec<u8>>,
    /// `x-hsmls-public`: the public key of a wrapped key.
    pub public: Option<Vec<u8>>,
}

fn invalid(uri: &str, why: &str) -> CustodyError {
    // URIs hold no secrets (a wrapped key is useless without the token), but
    // keep errors short.
    let shown: String = uri.chars().take(120).collect();
    CustodyError::InvalidUri(format!("{why}: {shown}"))
}

fn decode(uri: &str, value: &str) -> Result<Vec<u8>, CustodyError> {
    // Reject malformed escapes instead of passing them through.
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(invalid(uri, "malformed percent-encoding"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode_str(value).collect())
}

fn decode_str(uri: &str, value: &str) -> Result<String, CustodyError> {
    String::from_utf8(decode(uri, value)?).map_err(|_| invalid(uri, "attribute is not UTF-8"))
}

fn decode_hex(uri: &str, value: &str) -> Result<Vec<u8>, CustodyError> {
    hex::decode(value).map_err(|_| invalid(uri, "vendor attribute is not hex"))
}

fn set_once<T>(slot: &mut Option<T>, value: T, uri: &str) -> Result<(), CustodyError> {
    if slot.is_some() {
        return Err(invalid(uri, "attribute given twice"));
    }
    *slot = Some(value);
    Ok(())
}

impl Pkcs11Uri {
    /// Parses a PKCS#11 URI. Path attributes other than token, object, id and
    /// type (manufacturer, serial, slot-…, library-…, x-…) and query
    /// attributes other than hsmls's own are accepted and ignored.
    pub fn parse(uri: &str) -> Result<Self, CustodyError> {
        if uri.len() > MAX_URI_LEN {
            return Err(CustodyError::InvalidUri(format!(
                "URI longer than {MAX_URI_LEN} bytes"
            )));
        }
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid(uri, "not a pkcs11: URI"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(uri, "path attribute without '='"))?;
            match name {
                "token" => set_once(&mut out.token, decode_str(uri, value)?, uri)?,
                "object" => set_once(&mut out.object, decode_str(uri, value)?, uri)?,
                "id" => set_once(&mut out.id, decode(uri, value)?, uri)?,
                "type" => {
                    let t = decode_str(uri, value)?;
                    if !["private", "public", "secret-key", "cert", "data"].contains(&t.as_str()) {
                        return Err(invalid(uri, "unknown object type"));
                    }
                    set_once(&mut out.object_type, t, uri)?
                }
                "manufacturer"
                | "model"
                | "serial"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                n if n.starts_with("x-") => {}
                _ => return Err(invalid(uri, "unknown path attribute")),
            }
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(uri, "query attribute without '='"))?;
            match name {
                Q_WRAPPED => set_once(&mut out.wrapped, decode_hex(uri, value)?, uri)?,
                Q_WRAPPING_KEY => set_once(&mut out.wrapping_key_id, decode_hex(uri, value)?, uri)?,
                Q_PUBLIC => set_once(&mut out.public, decode_hex(uri, value)?, uri)?,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Formats the URI (attributes in a fixed order; `id` fully
    /// percent-encoded as RFC 7512 §2.3 recommends).
    pub fn format(&self) -> String {
        let mut path = Vec::new();
        if let Some(t) = &self.token {
            path.push(format!("token={}", utf8_percent_encode(t, VALUE)));
        }
        if let Some(o) = &self.object {
            path.push(format!("object={}", utf8_percent_encode(o, VALUE)));
        }
        if let Some(id) = &self.id {
            let enc: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            path.push(format!("id={enc}"));
        }
        if let Some(t) = &self.object_type {
            path.push(format!("type={}", utf8_percent_encode(t, VALUE)));
        }
        let mut uri = format!("pkcs11:{}", path.join(";"));
        let mut query = Vec::new();
        if let Some(w) = &self.wrapped {
            query.push(format!("{Q_WRAPPED}={}", hex::encode(w)));
        }
        if let Some(k) = &self.wrapping_key_id {
            query.push(format!("{Q_WRAPPING_KEY}={}", hex::encode(k)));
        }
        if let Some(p) = &self.public {
            query.push(format!("{Q_PUBLIC}={}", hex::encode(p)));
        }
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        uri
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_examples_parse() {
        // RFC 7512 §3 examples.
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.object.as_deref(), Some("my-certificate"));
        assert_eq!(u.object_type.as_deref(), Some("cert"));
        assert_eq!(
            u.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        let u = Pkcs11Uri::parse("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11")
            .unwrap();
        assert_eq!(u.object.as_deref(), Some("my-sign-key"));
        assert_eq!(u.token, None);
    }

    #[test]
    fn format_then_parse_round_trips() {
        let u = Pkcs11Uri {
            token: Some("hsmls test;1".into()),
            object: Some("hsmls-hpke-0a".into()),
            id: Some(vec![0, 1, 0xfe]),
            object_type: Some("private".into()),
            wrapped: Some(vec![9; 40]),
            wrapping_key_id: Some(vec![7; 16]),
            public: Some(vec![4; 65]),
        };
        let s = u.format();
        assert!(s.starts_with("pkcs11:token=hsmls%20test%3B1;object=hsmls-hpke-0a;id=%00%01%fe;type=private?x-hsmls-wrapped="));
        assert_eq!(Pkcs11Uri::parse(&s).unwrap(), u);
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "software:1",
            "pkcs11:object",
            "pkcs11:id=%zz",
            "pkcs11:id=%4",
            "pkcs11:object=a;object=b",
            "pkcs11:type=banana",
            "pkcs11:colour=red",
            "pkcs11:object=a?x-hsmls-wrapped=nothex",
        ] {
            assert!(
                matches!(Pkcs11Uri::parse(bad), Err(CustodyError::InvalidUri(_))),
                "{bad}"
            );
        }
        let long = format!("pkcs11:object={}", "a".repeat(MAX_URI_LEN));
        assert!(matches!(
            Pkcs11Uri::parse(&long),
            Err(CustodyError::InvalidUri(_))
        ));
    }
}
