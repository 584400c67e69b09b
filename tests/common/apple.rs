//! A real Apple MDM server for the tests: the unmodified NanoMDM build in
//! `../shared/tools/nanomdm` (plain HTTP, filekv storage in the test's temp dir) behind Debian's
//! nginx, which terminates TLS 1.3, verifies the device certificate against a throw-away device
//! CA and hands it to NanoMDM in a header — the setup NanoMDM documents for production. A small
//! webhook receiver collects NanoMDM's events (check-ins and every command report); commands are
//! queued through NanoMDM's own API. Enrollment profiles (.mobileconfig with a PKCS#12 identity)
//! are generated here as an MDM vendor would.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use plist::{Dictionary, Value};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::Value as Json;

use super::{wait_until, Device, DeviceSpec};

/// The topic every generated profile uses.
pub const TOPIC: &str = "com.apple.mgmt.External.latchkey-test";
const API_KEY: &str = "latchkey-test-api-key";

/// Where NanoMDM lives, beside the project.
pub fn nanomdm_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/nanomdm/nanomdm")
}

/// nginx, as Debian installs it.
pub fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists()).expect(
        "nginx is not installed: run `.ci/apple-mdm` (it installs nginx-light), or `apt-get install nginx-light`",
    )
}

/// A CA that signs certificates.
pub struct Ca {
    pub pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { pem: cert.pem(), cert, key }
    }

    /// A leaf (PEM certificate, key) for `name`; a server certificate when `server` is set.
    pub fn issue(&self, name: &str, server: bool) -> (String, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = if server {
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params")
        } else {
            CertificateParams::default()
        };
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let issuer = rcgen::Issuer::from_ca_cert_der(self.cert.der(), &self.key).expect("issuer");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key)
    }
}

/// How the generated profile carries the PKCS#12 password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Password {
    /// In the identity payload's `Password` key.
    InProfile,
    /// Not in the profile: given to `latchkey enroll` on a file or stdin.
    Separate,
}

/// Writes an enrollment profile with a device identity from `ca`; returns the PKCS#12 password.
pub fn write_profile(path: &Path, server_url: &str, ca: &Ca, password: Password, legacy_3des: bool) -> String {
    let (cert_pem, key) = ca.issue("latchkey-test-device", false);
    let secret = format!("p12-{}", uuid::Uuid::new_v4().simple());
    let cert_der = pem::parse(&cert_pem).expect("cert pem").into_contents();
    let cert = p12_keystore::Certificate::from_der(&cert_der).expect("cert");
    let key = p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("key");
    let chain = p12_keystore::PrivateKeyChain::new(b"device-key".to_vec(), key, vec![cert]);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("device", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let mut writer = store.writer(&secret);
    if legacy_3des {
        // How older Keychain and OpenSSL exports look.
        writer = writer
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1);
    }
    let p12 = writer.write().expect("pkcs12");

    let identity_uuid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
    let mut identity = Dictionary::new();
    identity.insert("PayloadType".into(), "com.apple.security.pkcs12".into());
    identity.insert("PayloadUUID".into(), identity_uuid.clone().into());
    identity.insert("PayloadIdentifier".into(), "com.example.latchkey.identity".into());
    identity.insert("PayloadVersion".into(), Value::Integer(1.into()));
    identity.insert("PayloadContent".into(), Value::Data(p12));
    if password == Password::InProfile {
        identity.insert("Password".into(), secret.clone().into());
    }
    let mut mdm = Dictionary::new();
    mdm.insert("PayloadType".into(), "com.apple.mdm".into());
    mdm.insert("PayloadUUID".into(), uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase().into());
    mdm.insert("PayloadIdentifier".into(), "com.example.latchkey.mdm".into());
    mdm.insert("PayloadVersion".into(), Value::Integer(1.into()));
    mdm.insert("ServerURL".into(), server_url.into());
    mdm.insert("Topic".into(), TOPIC.into());
    mdm.insert("IdentityCertificateUUID".into(), identity_uuid.into());
    mdm.insert("AccessRights".into(), Value::Integer(8191.into()));
    mdm.insert("CheckOutWhenRemoved".into(), Value::Boolean(true));
    mdm.insert("SignMessage".into(), Value::Boolean(false));
    let mut top = Dictionary::new();
    top.insert("PayloadType".into(), "Configuration".into());
    top.insert("PayloadDisplayName".into(), "Latchkey test enrollment".into());
    top.insert("PayloadIdentifier".into(), "com.example.latchkey".into());
    top.insert("PayloadUUID".into(), uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase().into());
    top.insert("PayloadVersion".into(), Value::Integer(1.into()));
    top.insert("PayloadContent".into(), Value::Array(vec![Value::Dictionary(mdm), Value::Dictionary(identity)]));
    Value::Dictionary(top).to_file_xml(path).expect("write profile");
    secret
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn wait_listening(what: &str, port: u16, child: &mut Child) {
    wait_until(what, Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, answer[split + 4..].to_vec())
}

/// NanoMDM's webhook events, as they arrive.
#[derive(Clone, Default)]
pub struct Events {
    events: Arc<Mutex<Vec<Json>>>,
    /// CommandUUID → RequestType, for the log.
    enqueued: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

impl Events {
    fn serve(listener: TcpListener, events: Events) {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(json) = serde_json::from_slice(&body) {
                        events.events.lock().expect("events").push(json);
                    }
                }
                let _ =
                    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Json> {
        self.events.lock().expect("events").clone()
    }

    /// Events of one topic (`mdm.Authenticate`, `mdm.TokenUpdate`, `mdm.CheckOut`, `mdm.Connect`).
    pub fn topic(&self, topic: &str) -> Vec<Json> {
        self.all().into_iter().filter(|e| e["topic"] == topic).collect()
    }

    /// The reports NanoMDM recorded for one command, each as (status, the device's plist).
    pub fn reports(&self, command_uuid: &str) -> Vec<(String, Dictionary)> {
        self.topic("mdm.Connect")
            .into_iter()
            .filter(|e| e["acknowledge_event"]["command_uuid"] == command_uuid)
            .map(|e| {
                let status = e["acknowledge_event"]["status"].as_str().unwrap_or_default().to_owned();
                (status, raw_payload(&e["acknowledge_event"]))
            })
            .collect()
    }

    /// Waits for the first report of a command.
    pub fn wait_report(&self, command_uuid: &str) -> (String, Dictionary) {
        wait_until(&format!("NanoMDM's report of {command_uuid}"), Duration::from_secs(30), || {
            !self.reports(command_uuid).is_empty()
        });
        let (status, plist) = self.reports(command_uuid).remove(0);
        let request_type = self.enqueued.lock().expect("enqueued").get(command_uuid).cloned().unwrap_or_default();
        eprintln!("NanoMDM recorded {request_type} {command_uuid}: {status} {}", error_code(&plist));
        (status, plist)
    }

    /// Waits until NanoMDM has posted at least one `topic` check-in of `id` (its webhook runs
    /// beside the request, so an answered check-in may not have been posted yet), then returns
    /// them all.
    pub fn wait_checkins(&self, topic: &str, id: &str) -> Vec<Dictionary> {
        wait_until(&format!("NanoMDM's {topic} event for {id}"), Duration::from_secs(30), || {
            !self.checkins(topic, id).is_empty()
        });
        self.checkins(topic, id)
    }

    /// The check-in events whose device plist names `id` (by UDID or EnrollmentID).
    pub fn checkins(&self, topic: &str, id: &str) -> Vec<Dictionary> {
        self.topic(topic)
            .into_iter()
            .map(|e| raw_payload(&e["checkin_event"]))
            .filter(|d| text(d, "UDID") == id || text(d, "EnrollmentID") == id)
            .collect()
    }
}

/// The device's own plist inside a webhook event.
pub fn raw_payload(event: &Json) -> Dictionary {
    let raw = event["raw_payload"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("raw_payload base64");
    match Value::from_reader(std::io::Cursor::new(bytes)).expect("raw_payload plist") {
        Value::Dictionary(d) => d,
        other => panic!("raw_payload is not a dictionary: {other:?}"),
    }
}

/// A string value of a plist dictionary.
pub fn text(d: &Dictionary, key: &str) -> String {
    d.get(key).and_then(Value::as_string).unwrap_or_default().to_owned()
}

/// The first `ErrorChain` entry's Latchkey code.
pub fn error_code(d: &Dictionary) -> String {
    d.get("ErrorChain")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(Value::as_dictionary)
        .map(|e| text(e, "LatchkeyErrorCode"))
        .unwrap_or_default()
}

/// NanoMDM behind nginx, with its webhook receiver.
pub struct NanoMdm {
    pub dir: PathBuf,
    pub device_ca: Ca,
    pub server_ca: PathBuf,
    pub server_url: String,
    pub events: Events,
    api_port: u16,
    nanomdm: Child,
    nginx: Child,
}

impl NanoMdm {
    pub fn start(root: &Path) -> NanoMdm {
        let dir = root.join("nanomdm");
        std::fs::create_dir_all(dir.join("db")).expect("dirs");
        std::fs::create_dir_all(dir.join("nginx")).expect("dirs");
        let device_ca = Ca::new("Latchkey test device CA");
        std::fs::write(dir.join("device-ca.pem"), &device_ca.pem).expect("device ca");
        let server_ca = Ca::new("Latchkey test server CA");
        let (server_cert, server_key) = server_ca.issue("127.0.0.1", true);
        std::fs::write(dir.join("server-ca.pem"), &server_ca.pem).expect("server ca");
        std::fs::write(dir.join("server.pem"), server_cert).expect("server cert");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("server key");

        let hook = TcpListener::bind("127.0.0.1:0").expect("webhook");
        let hook_port = hook.local_addr().expect("addr").port();
        let events = Events::default();
        Events::serve(hook, events.clone());

        let api_port = free_port();
        let log = std::fs::File::create(dir.join("nanomdm.log")).expect("log");
        let mut nanomdm = Command::new(nanomdm_bin())
            .args(["-ca", dir.join("device-ca.pem").to_str().expect("utf8")])
            .args(["-cert-header", "X-Client-Cert", "-api", API_KEY])
            .args(["-listen", &format!("127.0.0.1:{api_port}")])
            .args(["-storage", "filekv", "-storage-dsn", dir.join("db").to_str().expect("utf8")])
            .args(["-webhook-url", &format!("http://127.0.0.1:{hook_port}/"), "-debug"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nanomdm");
        wait_listening("nanomdm", api_port, &mut nanomdm);

        let tls_port = free_port();
        let n = dir.join("nginx");
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {n}/nginx.pid;\nerror_log {n}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {n}/access.log;\n  client_body_temp_path {n}/body;\n  proxy_temp_path {n}/proxy;\n\
               fastcgi_temp_path {n}/fastcgi;\n  uwsgi_temp_path {n}/uwsgi;\n  scgi_temp_path {n}/scgi;\n\
               server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    ssl_protocols TLSv1.3;\n\
                 ssl_certificate {d}/server.pem;\n    ssl_certificate_key {d}/server.key;\n\
                 ssl_client_certificate {d}/device-ca.pem;\n    ssl_verify_client on;\n\
                 location / {{ proxy_pass http://127.0.0.1:{api_port}; proxy_set_header X-Client-Cert $ssl_client_escaped_cert; }}\n  }}\n}}\n",
            n = n.display(),
            d = dir.display(),
        );
        std::fs::write(n.join("nginx.conf"), conf).expect("nginx conf");
        let log = std::fs::File::create(n.join("stderr.log")).expect("log");
        let mut nginx = Command::new(nginx_bin())
            .args(["-c", n.join("nginx.conf").to_str().expect("utf8"), "-p", n.to_str().expect("utf8")])
            .args(["-e", n.join("error.log").to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nginx");
        wait_listening("nginx", tls_port, &mut nginx);
        NanoMdm {
            server_ca: dir.join("server-ca.pem"),
            server_url: format!("https://127.0.0.1:{tls_port}/mdm"),
            dir,
            device_ca,
            events,
            api_port,
            nanomdm,
            nginx,
        }
    }

    /// Queues a command for `id` through NanoMDM's API; returns its CommandUUID.
    pub fn enqueue(&self, id: &str, request_type: &str, fields: Dictionary) -> String {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        let mut command = fields;
        command.insert("RequestType".into(), request_type.into());
        let mut top = Dictionary::new();
        top.insert("CommandUUID".into(), uuid.clone().into());
        top.insert("Command".into(), Value::Dictionary(command));
        let mut body = Vec::new();
        Value::Dictionary(top).to_writer_xml(&mut body).expect("plist");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("nanomdm:{API_KEY}"));
        let (status, answer) = http(
            self.api_port,
            "PUT",
            &format!("/v1/enqueue/{id}?nopush=1"),
            &[("Authorization", format!("Basic {auth}")), ("Content-Type", "application/xml".into())],
            &body,
        );
        assert_eq!(status, 200, "enqueue: {}", String::from_utf8_lossy(&answer));
        self.events.enqueued.lock().expect("enqueued").insert(uuid.clone(), request_type.to_owned());
        uuid
    }

    /// A simulated device configured for this server, with a profile written beside it.
    pub fn device(&self, root: &Path, name: &str, sim_profile: &str, password: Password) -> AppleDevice {
        let server = format!("protocol = \"apple-mdm\"\nca = \"{}\"\n", self.server_ca.display());
        let device = Device::prepare_for(root, name, &server, DeviceSpec::new(sim_profile));
        let profile = device.dir.join("enroll.mobileconfig");
        let secret = write_profile(&profile, &self.server_url, &self.device_ca, password, sim_profile == "macos");
        AppleDevice { device, profile, password: secret }
    }

    /// What nginx and NanoMDM logged (for failure messages).
    pub fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- nanomdm ---\n{}\n--- nginx ---\n{}",
            read(self.dir.join("nanomdm.log")),
            read(self.dir.join("nginx/error.log"))
        )
    }
}

impl Drop for NanoMdm {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.nanomdm] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A device enrolled (or to be enrolled) from a generated profile.
pub struct AppleDevice {
    pub device: Device,
    pub profile: PathBuf,
    pub password: String,
}

impl AppleDevice {
    /// `latchkey enroll --mobileconfig`, the password on stdin when the profile lacks it.
    pub fn enroll(&mut self) -> std::process::Output {
        let mut cmd = Command::new(super::agent_bin());
        cmd.args(["enroll", "--config", self.device.config.to_str().expect("utf8")])
            .args(["--mobileconfig", self.profile.to_str().expect("utf8")]);
        let out = super::run_with_stdin(&mut cmd, &self.password);
        if out.status.success() {
            self.device.id = String::from_utf8_lossy(&out.stdout)
                .trim()
                .strip_prefix("enrolled as ")
                .expect("enrolled line")
                .to_owned();
        }
        out
    }
}
