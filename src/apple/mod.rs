//! Apple's MDM protocol, the agent's second wire dialect: what an Apple MDM server (NanoMDM,
//! any other) needs from an iOS-like or macOS device. The platform layer, the journal and the
//! secret store are the same as for the native dialect; this module only translates.
//!
//! - [`profile`]: the enrollment profile (`.mobileconfig`): the `com.apple.mdm` payload and the
//!   `com.apple.security.pkcs12` identity it names.
//! - [`messages`]: check-in messages (`Authenticate`, `TokenUpdate`, `CheckOut`), the command
//!   loop's `Idle` and results, and commands → Latchkey actions. Pure: no I/O.
//! - The HTTP side is `transport::apple`.
//!
//! Sources (Apple's own schema, github.com/apple/device-management):
//! `mdm/profiles/com.apple.mdm.yaml` (ServerURL, CheckInURL, Topic, AccessRights,
//! CheckOutWhenRemoved, SignMessage), `mdm/checkin/authenticate.yaml`,
//! `mdm/checkin/tokenupdate.yaml`, `mdm/checkin/checkout.yaml`, `mdm/commands/passcode.clear.yaml`,
//! `mdm/commands/device.lock.yaml`, and the Device Management article "Handling NotNow status
//! responses".
use latchkey_platform::Platform;
use serde::{Deserialize, Serialize};

#[cfg(feature = "apple-mdm")]
pub mod messages;
#[cfg(feature = "apple-mdm")]
pub mod profile;

/// Why an Apple setting is refused by a build without the dialect.
pub const NOT_BUILT: &str =
    "this latchkey was built without the Apple MDM dialect (cargo feature `apple-mdm`; Android and Linux builds leave it out)";

/// Every MDM push topic lives in this namespace (com.apple.mdm.yaml, `Topic`).
pub const TOPIC_PREFIX: &str = "com.apple.mgmt.";

/// AccessRights bit 4: "Allow device lock and passcode removal" — required by DeviceLock and
/// ClearPasscode, and for the UnlockToken in TokenUpdate (com.apple.mdm.yaml, tokenupdate.yaml).
pub const ALLOW_LOCK_AND_PASSCODE_REMOVAL: u64 = 4;

/// Every right (bits 1..4096), what a profile without `AccessRights` is taken to grant. Apple
/// documents no default for a missing key; this reading is ours.
pub const ALL_RIGHTS: u64 = 8191;

/// What an Apple enrollment fixed, kept with the identity: it is the MDM payload that stays
/// installed on an Apple device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The push topic (`com.apple.mgmt.…`).
    pub topic: String,
    /// The command URL (ServerURL).
    pub server_url: String,
    /// The check-in URL (CheckInURL, else ServerURL).
    pub checkin_url: String,
    /// The profile's AccessRights (ignored in User Enrollment).
    pub access_rights: u64,
    /// Send `CheckOut` when leaving management.
    pub checkout_when_removed: bool,
    /// A User Enrollment: identified by EnrollmentID, never by UDID, and no UnlockToken.
    pub user_enrollment: bool,
    /// iOS-like or macOS, as the device said at enrollment.
    pub platform: Platform,
}

impl Enrollment {
    /// The key that names this device in every message: `UDID` for a device enrollment,
    /// `EnrollmentID` for a User Enrollment ("UDID … forbidden" in user enrollment,
    /// tokenupdate.yaml).
    pub fn id_key(&self) -> &'static str {
        if self.user_enrollment {
            "EnrollmentID"
        } else {
            "UDID"
        }
    }

    /// Whether lock and passcode removal are allowed by the profile. AccessRights is ignored
    /// in User Enrollment (com.apple.mdm.yaml), where the platform's own rules decide.
    pub fn allows_lock_and_removal(&self) -> bool {
        self.user_enrollment || self.access_rights & ALLOW_LOCK_AND_PASSCODE_REMOVAL != 0
    }

    /// Whether a TokenUpdate may carry the UnlockToken: device channel of an iOS-like device
    /// with the lock-and-removal right; forbidden in User Enrollment, n/a on macOS
    /// (tokenupdate.yaml, `UnlockToken`).
    pub fn sends_unlock_token(&self) -> bool {
        !self.user_enrollment
            && self.platform == Platform::Ios
            && self.access_rights & ALLOW_LOCK_AND_PASSCODE_REMOVAL != 0
    }
}
