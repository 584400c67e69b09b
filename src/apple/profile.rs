//! The enrollment profile: a `.mobileconfig` property list whose `PayloadContent` holds the
//! `com.apple.mdm` payload and the identity it names by `IdentityCertificateUUID` — here a
//! `com.apple.security.pkcs12` payload (SCEP is not supported: say so).
//!
//! Checked as Apple documents them (com.apple.mdm.yaml): ServerURL and CheckInURL are https,
//! the topic is in `com.apple.mgmt.`, AccessRights is not 0, 2 needs 1 and 128 needs 64.
//! `SignMessage` is refused: this agent authenticates every request with the TLS client
//! certificate and does not sign bodies (`Mdm-Signature`). Signed profiles (CMS) are refused
//! with their own message: only unsigned profiles are read.
use latchkey_platform::Secret;
use plist::{Dictionary, Value};
use zeroize::Zeroizing;

use super::{ALL_RIGHTS, TOPIC_PREFIX};

/// The MDM payload's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdmPayload {
    /// ServerURL.
    pub server_url: String,
    /// CheckInURL (ServerURL when the profile has none).
    pub checkin_url: String,
    /// Topic.
    pub topic: String,
    /// AccessRights ([`ALL_RIGHTS`] when absent — our reading).
    pub access_rights: u64,
    /// CheckOutWhenRemoved.
    pub checkout_when_removed: bool,
}

/// A parsed enrollment profile.
pub struct Profile {
    /// The MDM payload.
    pub mdm: MdmPayload,
    /// The PKCS#12 identity.
    pub pkcs12: Zeroizing<Vec<u8>>,
    /// The identity payload's own `Password`, when the profile carries one.
    pub password: Option<Secret>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile").field("mdm", &self.mdm).field("pkcs12", &"<redacted>").finish()
    }
}

fn text(d: &Dictionary, key: &str) -> String {
    d.get(key).and_then(Value::as_string).unwrap_or_default().to_owned()
}

fn check_https(key: &str, url: &str) -> Result<(), String> {
    crate::transport::https::HttpsUrl::parse(url).map(drop).map_err(|e| format!("the MDM payload's {key}: {e}"))
}

/// Reads a profile. Errors say what is wrong in words and never quote secrets.
pub fn parse(bytes: &[u8]) -> Result<Profile, String> {
    // A signed profile is a DER CMS SignedData (SEQUENCE), not a plist.
    if bytes.first() == Some(&0x30) {
        return Err(
            "the profile is signed (CMS); only unsigned .mobileconfig files are read — export it unsigned".into()
        );
    }
    let Value::Dictionary(mut top) = Value::from_reader(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the profile is not a property list ({e})"))?
    else {
        return Err("the profile is not a dictionary".into());
    };
    let mut payloads: Vec<Dictionary> = match top.remove("PayloadContent") {
        Some(Value::Array(items)) => items.into_iter().filter_map(Value::into_dictionary).collect(),
        _ => return Err("the profile has no PayloadContent array".into()),
    };
    let position = |kind: &str, payloads: &[Dictionary]| payloads.iter().position(|p| text(p, "PayloadType") == kind);
    let mdm_at = position("com.apple.mdm", &payloads).ok_or("the profile has no com.apple.mdm payload")?;
    let mdm = payloads.swap_remove(mdm_at);
    let server_url = text(&mdm, "ServerURL");
    if server_url.is_empty() {
        return Err("the MDM payload has no ServerURL".into());
    }
    check_https("ServerURL", &server_url)?;
    let checkin_url = match text(&mdm, "CheckInURL") {
        url if url.is_empty() => server_url.clone(),
        url => {
            check_https("CheckInURL", &url)?;
            url
        }
    };
    let topic = text(&mdm, "Topic");
    if !topic.starts_with(TOPIC_PREFIX) {
        return Err(format!(
            "the MDM payload's Topic {topic:?} is not in {TOPIC_PREFIX}* (Apple's MDM topic namespace)"
        ));
    }
    let access_rights = match mdm.get("AccessRights") {
        None => ALL_RIGHTS,
        Some(v) => v.as_unsigned_integer().ok_or("the MDM payload's AccessRights is not a positive integer")?,
    };
    if access_rights == 0 || access_rights & !ALL_RIGHTS != 0 {
        return Err(format!(
            "the MDM payload's AccessRights {access_rights} is not a set of Apple's rights (1..8191, not 0)"
        ));
    }
    if access_rights & 2 != 0 && access_rights & 1 == 0 || access_rights & 128 != 0 && access_rights & 64 == 0 {
        return Err(format!(
            "the MDM payload's AccessRights {access_rights} grants 2 without 1 or 128 without 64, which Apple forbids"
        ));
    }
    if mdm.get("SignMessage").and_then(Value::as_boolean) == Some(true) {
        return Err("the MDM payload asks for SignMessage (Mdm-Signature headers), which this agent does not send; it authenticates with the TLS client certificate — set SignMessage to false".into());
    }
    let checkout_when_removed = mdm.get("CheckOutWhenRemoved").and_then(Value::as_boolean).unwrap_or(false);
    let identity_uuid = text(&mdm, "IdentityCertificateUUID");
    if identity_uuid.is_empty() {
        return Err("the MDM payload has no IdentityCertificateUUID".into());
    }
    let identity = payloads
        .into_iter()
        .find(|p| text(p, "PayloadUUID") == identity_uuid)
        .ok_or_else(|| format!("the profile has no payload with the IdentityCertificateUUID {identity_uuid}"))?;
    let kind = text(&identity, "PayloadType");
    if kind != "com.apple.security.pkcs12" {
        return Err(format!(
            "the identity payload is {kind:?}; this agent reads com.apple.security.pkcs12 identities (SCEP and ACME are not supported)"
        ));
    }
    let mut identity = identity;
    let pkcs12 = match identity.remove("PayloadContent") {
        Some(Value::Data(bytes)) => Zeroizing::new(bytes),
        _ => return Err("the identity payload has no PKCS#12 data in PayloadContent".into()),
    };
    let password = match identity.remove("Password") {
        Some(Value::String(p)) => Some(Secret::new(p)),
        _ => None,
    };
    Ok(Profile {
        mdm: MdmPayload { server_url, checkin_url, topic, access_rights, checkout_when_removed },
        pkcs12,
        password,
    })
}

/// The certificate chain (PEM, leaf first) and the PKCS#8 private key (PEM) in a PKCS#12.
pub fn identity(pkcs12: &[u8], password: &Secret) -> Result<(String, Zeroizing<String>), String> {
    let store =
        p12_keystore::KeyStore::from_pkcs12(pkcs12, password.expose(), p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .map_err(|e| match e {
                // The MAC is keyed with the password: a wrong one fails it.
                p12_keystore::error::Error::MacError(_) => {
                    "the PKCS#12 password is wrong (its MAC does not verify)".to_owned()
                }
                other => format!("the PKCS#12 identity cannot be read ({other})"),
            })?;
    let (_, chain) = store.private_key_chain().ok_or("the PKCS#12 holds no private key with its certificate")?;
    if chain.certs().is_empty() {
        return Err("the PKCS#12 holds a private key without its certificate".into());
    }
    let mut cert_pem = String::new();
    for cert in chain.certs() {
        cert_pem.push_str(&pem("CERTIFICATE", cert.as_der()));
    }
    let key_pem = Zeroizing::new(pem("PRIVATE KEY", chain.key().as_der()));
    Ok((cert_pem, key_pem))
}

fn pem(label: &str, der: &[u8]) -> String {
    let block = pem::Pem::new(label, der.to_vec());
    let text = pem::encode_config(&block, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF));
    // The key's DER copy is a secret.
    zeroize::Zeroize::zeroize(&mut block.into_contents());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_payload(uuid: &str, p12: Vec<u8>, password: Option<&str>) -> Value {
        let mut d = Dictionary::new();
        d.insert("PayloadType".into(), "com.apple.security.pkcs12".into());
        d.insert("PayloadUUID".into(), uuid.into());
        d.insert("PayloadContent".into(), Value::Data(p12));
        if let Some(p) = password {
            d.insert("Password".into(), p.into());
        }
        Value::Dictionary(d)
    }

    fn profile(mdm: &[(&str, Value)], identity: Value) -> Vec<u8> {
        let mut payload: Dictionary = mdm.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        payload.insert("PayloadType".into(), "com.apple.mdm".into());
        let mut top = Dictionary::new();
        top.insert("PayloadContent".into(), Value::Array(vec![Value::Dictionary(payload), identity]));
        let mut out = Vec::new();
        Value::Dictionary(top).to_writer_xml(&mut out).expect("xml");
        out
    }

    fn good() -> Vec<(&'static str, Value)> {
        vec![
            ("ServerURL", "https://mdm.example.com/mdm".into()),
            ("Topic", "com.apple.mgmt.External.x".into()),
            ("IdentityCertificateUUID", "ID-1".into()),
            ("AccessRights", Value::Integer(8191.into())),
        ]
    }

    fn with(key: &'static str, value: Value) -> Vec<(&'static str, Value)> {
        let mut mdm: Vec<_> = good().into_iter().filter(|(k, _)| *k != key).collect();
        mdm.push((key, value));
        mdm
    }

    #[test]
    fn reads_the_mdm_payload_and_the_identity_it_names() {
        let parsed = parse(&profile(&good(), identity_payload("ID-1", vec![1, 2], Some("pw")))).expect("parses");
        assert_eq!(parsed.mdm.server_url, "https://mdm.example.com/mdm");
        assert_eq!(parsed.mdm.checkin_url, parsed.mdm.server_url, "CheckInURL defaults to ServerURL");
        assert_eq!(parsed.mdm.access_rights, 8191);
        assert!(!parsed.mdm.checkout_when_removed, "CheckOutWhenRemoved defaults to false");
        assert_eq!(parsed.pkcs12.as_slice(), &[1, 2]);
        assert_eq!(parsed.password.as_ref().map(Secret::expose), Some("pw"));
        assert!(!format!("{parsed:?}").contains("pw\""), "Debug must not show the password");
    }

    #[test]
    fn refuses_what_apple_forbids_or_this_agent_cannot_do_by_name() {
        let p12 = || identity_payload("ID-1", vec![1], None);
        for (mdm, expected) in [
            (with("ServerURL", "http://mdm.example.com/mdm".into()), "ServerURL"),
            (with("Topic", "com.example.push".into()), "com.apple.mgmt."),
            (with("AccessRights", Value::Integer(0.into())), "AccessRights"),
            (with("AccessRights", Value::Integer(2.into())), "2 without 1"),
            (with("AccessRights", Value::Integer((128 | 1).into())), "128 without 64"),
            (with("SignMessage", Value::Boolean(true)), "SignMessage"),
            (with("IdentityCertificateUUID", "ID-2".into()), "ID-2"),
        ] {
            let err = parse(&profile(&mdm, p12())).expect_err(expected);
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut scep = Dictionary::new();
        scep.insert("PayloadType".into(), "com.apple.security.scep".into());
        scep.insert("PayloadUUID".into(), "ID-1".into());
        assert!(parse(&profile(&good(), Value::Dictionary(scep))).expect_err("scep").contains("SCEP"));
        assert!(parse(&[0x30, 0x82, 0x01]).expect_err("cms").contains("signed"));
        assert!(parse(b"not a plist").expect_err("junk").contains("property list"));
    }

    #[test]
    fn a_pkcs12_round_trips_into_pem_and_a_wrong_password_is_named() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert =
            rcgen::CertificateParams::new(vec!["device".to_owned()]).expect("params").self_signed(&key).expect("cert");
        let chain = p12_keystore::PrivateKeyChain::new(
            b"k".to_vec(),
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("key"),
            vec![p12_keystore::Certificate::from_der(cert.der()).expect("cert")],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("device", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let p12 = store.writer("right").write().expect("p12");
        let (cert_pem, key_pem) = identity(&p12, &Secret::new("right".into())).expect("reads");
        assert_eq!(cert_pem.trim(), cert.pem().trim());
        assert_eq!(rcgen::KeyPair::from_pem(&key_pem).expect("key pem").public_key_raw(), key.public_key_raw());
        let err = identity(&p12, &Secret::new("wrong".into())).expect_err("wrong password");
        assert!(err.contains("password is wrong"), "{err}");
        assert!(!err.contains("right"));
    }
}
