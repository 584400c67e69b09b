//! The shadow file as text: find an account's entry and replace its password field. Pure: the
//! port reads and writes the file, this module only transforms its contents.

/// Why the shadow text could not be changed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShadowError {
    /// No line names the account.
    #[error("no account {0:?} in the shadow file")]
    NoAccount(String),
    /// The account's line has too few fields to hold a password and its change date.
    #[error("the shadow entry of {0:?} is malformed")]
    Malformed(String),
}

/// The password field of `user`'s entry.
pub fn password_field<'a>(text: &'a str, user: &str) -> Result<&'a str, ShadowError> {
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .ok_or_else(|| ShadowError::NoAccount(user.to_owned()))?;
    line.split(':').nth(1).ok_or_else(|| ShadowError::Malformed(user.to_owned()))
}

/// `text` with `user`'s password field set to `hash` and its last-change field (days since the
/// epoch) set to `days`; every other line and field is kept byte for byte.
pub fn with_password(text: &str, user: &str, hash: &str, days: u64) -> Result<String, ShadowError> {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + hash.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<&str> = body.split(':').collect();
        if fields.first() == Some(&user) {
            if fields.len() < 3 {
                return Err(ShadowError::Malformed(user.to_owned()));
            }
            let days = days.to_string();
            fields[1] = hash;
            fields[2] = &days;
            out.push_str(&fields.join(":"));
            found = true;
        } else {
            out.push_str(body);
        }
        out.push_str(newline);
    }
    if !found {
        return Err(ShadowError::NoAccount(user.to_owned()));
    }
    Ok(out)
}

/// True when a shadow password field holds a usable hash (not empty, locked or disabled).
pub fn has_password(field: &str) -> bool {
    !(field.is_empty() || field.starts_with('!') || field.starts_with('*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "root:*:19000:0:99999:7:::\nkiosk:!:19000:0:99999:7:::\nkiosk2:x:1:0:99999:7:::";

    #[test]
    fn replaces_one_field_pair_and_keeps_every_other_byte() {
        let out = with_password(SHADOW, "kiosk", "$y$j9T$abc$def", 20000).expect("replace");
        assert_eq!(out, "root:*:19000:0:99999:7:::\nkiosk:$y$j9T$abc$def:20000:0:99999:7:::\nkiosk2:x:1:0:99999:7:::");
        assert_eq!(password_field(&out, "kiosk"), Ok("$y$j9T$abc$def"));
        assert_eq!(password_field(&out, "kiosk2"), Ok("x"), "a name that merely starts alike is another account");
    }

    #[test]
    fn unknown_or_malformed_accounts_are_named() {
        assert_eq!(with_password(SHADOW, "nobody", "h", 1), Err(ShadowError::NoAccount("nobody".into())));
        assert_eq!(with_password("kiosk:x\n", "kiosk", "h", 1), Err(ShadowError::Malformed("kiosk".into())));
    }

    #[test]
    fn locked_and_empty_fields_are_not_passwords() {
        for field in ["", "!", "!$6$x", "*"] {
            assert!(!has_password(field), "{field:?}");
        }
        assert!(has_password("$y$j9T$a$b"));
    }
}
