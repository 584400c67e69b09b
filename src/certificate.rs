//! What the agent reads from its own certificate: when it expires, whose it is (the subject's
//! common name) and which key it certifies. Trust decisions are not made here — rustls and
//! webpki verify every certificate on the wire; this only checks that the identity file holds a
//! certificate for this key and this device, and when to renew it.
//!
//! Read with `yasna` (the DER reader rcgen writes CSRs with) along RFC 5280 §4.1, rather than a
//! full X.509 parser: three fields do not need one, and on the device it is ~90 KB smaller.
use rustls::pki_types::pem::{self, SectionKind};
use yasna::models::ObjectIdentifier;
use yasna::tags::{TAG_GENERALIZEDTIME, TAG_IA5STRING, TAG_PRINTABLESTRING, TAG_UTCTIME, TAG_UTF8STRING};
use yasna::{BERReader, BERReaderSeq, Tag};

/// The facts read from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The end of the validity period, Unix seconds.
    pub not_after: i64,
    /// The subject's first common name, if it has one as text.
    pub common_name: Option<String>,
    /// The subjectPublicKey bits (for EC keys the encoded point, as rcgen's `public_key_raw`).
    pub public_key: Vec<u8>,
}

/// id-at-commonName (RFC 5280 appendix A).
const COMMON_NAME: [u64; 4] = [2, 5, 4, 3];

/// Reads the facts from a PEM `CERTIFICATE`; the error says in words what is wrong.
pub fn facts_from_pem(cert_pem: &str) -> Result<Facts, String> {
    let (kind, der) = pem::from_buf(&mut cert_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| "the certificate is not a PEM certificate".to_owned())?;
    if kind != SectionKind::Certificate {
        return Err(format!("the certificate PEM holds a {kind:?}, not a CERTIFICATE"));
    }
    facts_from_der(&der).ok_or_else(|| "the certificate does not parse".to_owned())
}

/// Reads the facts from a DER certificate; `None` when it is not one.
pub fn facts_from_der(der: &[u8]) -> Option<Facts> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let facts = r.next().read_sequence(tbs_certificate)?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_bitvec_bytes()?; // signatureValue
            Ok(facts)
        })
    })
    .ok()
}

/// TBSCertificate: version, serialNumber, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, then the optional unique ids and extensions.
fn tbs_certificate(r: &mut BERReaderSeq<'_, '_>) -> yasna::ASN1Result<Facts> {
    r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?; // absent in v1
    r.next().read_der()?; // serialNumber
    r.next().read_der()?; // signature
    r.next().read_der()?; // issuer
    let not_after = r.next().read_sequence(|r| {
        time(r.next())?; // notBefore
        time(r.next())
    })?;
    let common_name = r.next().read_der().map(|subject| common_name(&subject))?;
    let public_key = r.next().read_sequence(|r| {
        r.next().read_der()?; // algorithm
        r.next().read_bitvec_bytes().map(|(bytes, _bits)| bytes)
    })?;
    while r.read_optional(|r| r.read_der())?.is_some() {} // issuerUniqueID, subjectUniqueID, extensions
    Ok(Facts { not_after, common_name, public_key })
}

/// A Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
fn time(r: BERReader<'_, '_>) -> yasna::ASN1Result<i64> {
    match r.lookahead_tag()? {
        TAG_UTCTIME => Ok(r.read_utctime()?.datetime().unix_timestamp()),
        TAG_GENERALIZEDTIME => Ok(r.read_generalized_time()?.datetime().unix_timestamp()),
        _ => Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid)),
    }
}

/// The first commonName of a Name (SEQUENCE OF SET OF AttributeTypeAndValue) that is text.
fn common_name(name: &[u8]) -> Option<String> {
    let cn = ObjectIdentifier::from_slice(&COMMON_NAME);
    let mut found = None;
    yasna::parse_der(name, |r| {
        r.read_sequence_of(|r| {
            r.read_set_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let value = r.next().read_tagged_der()?;
                    let text = [TAG_UTF8STRING, TAG_PRINTABLESTRING, TAG_IA5STRING].contains(&value.tag());
                    if found.is_none() && oid == cn && text {
                        found = std::str::from_utf8(value.value()).ok().map(str::to_owned);
                    }
                    Ok(())
                })
            })
        })
    })
    .ok()?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn certificate(cn: &str, not_after: (i32, u8, u8)) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::OrganizationName, "Latchkey");
        params.distinguished_name.push(DnType::CommonName, cn);
        let month = time::Month::try_from(not_after.1).expect("month");
        params.not_after =
            time::Date::from_calendar_date(not_after.0, month, not_after.2).expect("date").midnight().assume_utc();
        (params.self_signed(&key).expect("sign"), key)
    }

    #[test]
    fn reads_expiry_subject_and_key_with_either_time_encoding() {
        // 2049 is the last year in UTCTime; from 2050 RFC 5280 requires GeneralizedTime.
        // Expected: Python's calendar.timegm((year, 6, 1, 0, 0, 0)).
        for (year, expected) in [(2030, 1_906_502_400), (2049, 2_506_118_400), (2051, 2_569_190_400)] {
            let (cert, key) = certificate("dev-7", (year, 6, 1));
            // GeneralizedTime "YYYYMMDDHHMMSSZ": tag 0x18, 15 bytes.
            let generalized = cert.der().windows(2).any(|w| w == [0x18, 0x0f]);
            assert_eq!(generalized, year >= 2050, "{year}: the encoding under test");
            let facts = facts_from_pem(&cert.pem()).expect("facts");
            assert_eq!(facts.not_after, expected, "{year}");
            assert_eq!(facts.common_name.as_deref(), Some("dev-7"));
            assert_eq!(facts.public_key, key.public_key_raw());
        }
    }

    #[test]
    fn a_certificate_without_a_common_name_has_none() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "Latchkey");
        let cert = params.self_signed(&key).expect("sign");
        assert_eq!(facts_from_der(cert.der()).expect("facts").common_name, None);
    }

    #[test]
    fn damage_is_named() {
        let (cert, key) = certificate("dev-7", (2030, 6, 1));
        let der = cert.der().to_vec();
        assert_eq!(facts_from_pem("garbage").unwrap_err(), "the certificate is not a PEM certificate");
        let wrong = facts_from_pem(&key.serialize_pem()).unwrap_err();
        assert!(wrong.contains("not a CERTIFICATE"), "{wrong}");
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert_eq!(facts_from_der(&der[..cut]), None, "cut at {cut}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(facts_from_der(&trailing), None);
    }
}
