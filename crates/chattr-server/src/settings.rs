//! Typed settings, layered: embedded defaults → optional TOML file → `CHATTR__SECTION__KEY`
//! environment variables → command-line flags (each flag also reads `CHATTR_<FLAG>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chattr_auth::AuthSettings;
use chattr_gateway::GatewaySettings;
use chattr_messaging::MessagingSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A role this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// WebSocket and REST edge.
    Gateway,
    /// Accounts and sessions.
    Auth,
    /// Conversations and messages.
    Messaging,
    /// Outbox relay (publishes committed events to the bus).
    Relay,
    /// Fan-out (bus events to the pub/sub channels of recipients).
    Fanout,
    /// Calls: lifecycle, timers, signaling relay, TURN credentials.
    Video,
}

impl Role {
    /// Every role: the all-in-one shape.
    pub const ALL: [Role; 6] =
        [Role::Gateway, Role::Auth, Role::Messaging, Role::Relay, Role::Fanout, Role::Video];

    /// Parses `gateway,auth,...` (or `all`).
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Role>> {
        let mut roles = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = match name {
                "all" => {
                    roles.extend(Role::ALL);
                    continue;
                }
                "gateway" => Role::Gateway,
                "auth" => Role::Auth,
                "messaging" => Role::Messaging,
                "relay" => Role::Relay,
                "fanout" => Role::Fanout,
                "video" => Role::Video,
                other => bail!(
                    "unknown service {other:?} (expected gateway, auth, messaging, relay, fanout, video or all)"
                ),
            };
            roles.push(parsed);
        }
        roles.sort_by_key(|r| *r as u8);
        roles.dedup();
        if roles.is_empty() {
            bail!("no services selected");
        }
        Ok(roles)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Every setting of a `chattr serve` process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the HTTP/WebSocket listener.
    pub listen: SocketAddr,
    /// Directory for the SQLite file and generated secrets.
    pub data_dir: PathBuf,
    /// Store URL; default `sqlite://<data_dir>/chattr.db`.
    pub store: Option<String>,
    /// Bus URL.
    pub bus: String,
    /// Cache URL.
    pub cache: String,
    /// Roles to run (`all` by default).
    pub services: Vec<Role>,
    /// Log format.
    pub log_format: LogFormat,
    /// HMAC secret for access tokens; default: generated once into `<data_dir>/jwt.secret`.
    /// Never written out by [`Settings::to_toml`].
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// Auth service tunables.
    pub auth: AuthSettings,
    /// Messaging service tunables.
    pub messaging: MessagingSettings,
    /// Gateway tunables.
    pub gateway: GatewaySettings,
    /// Address of the gRPC listener serving this process's auth and messaging roles to
    /// other processes (none: those roles serve only this process's gateway).
    pub grpc_listen: Option<SocketAddr>,
    /// Where the roles this process does not run live.
    pub remote: RemoteSettings,
    /// Video tunables (TURN, ringing, grace period, mesh cap).
    pub video: chattr_video::VideoSettings,
    /// Export of trace spans to an OpenTelemetry collector (off by default).
    pub otlp: OtlpSettings,
}

/// Export of trace spans over OTLP (HTTP, JSON encoding): off unless `endpoint` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpSettings {
    /// The collector's base URL, e.g. `http://otel-collector:4318`; spans are POSTed to
    /// `<endpoint>/v1/traces`. Plain HTTP only (Chattr has no TLS client built in yet).
    pub endpoint: Option<String>,
    /// The `service.name` of this process's spans (default `chattr-<roles>`, e.g.
    /// `chattr-gateway`; `chattr` for the all-in-one process).
    pub service_name: Option<String>,
}

/// Addresses of remote services (gRPC), for roles this process does not run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteSettings {
    /// Auth instances (`host:port`), balanced round-robin with failover.
    pub auth: Vec<String>,
    /// Messaging instances (`host:port`).
    pub messaging: Vec<String>,
    /// Video instances (`host:port`).
    pub video: Vec<String>,
    /// Deadline of every call to a remote service, in milliseconds.
    pub deadline_ms: u64,
    /// Bound on connecting to one instance, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Shared secret between services: gRPC servers require it of every caller and
    /// clients present it. Never written out by [`Settings::to_toml`].
    #[serde(skip_serializing)]
    pub secret: Option<SecretString>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            auth: Vec::new(),
            messaging: Vec::new(),
            video: Vec::new(),
            deadline_ms: 5_000,
            connect_timeout_ms: 1_000,
            secret: None,
        }
    }
}

impl RemoteSettings {
    /// The client settings for `chattr-rpc`.
    pub fn rpc(&self) -> chattr_rpc::RemoteSettings {
        chattr_rpc::RemoteSettings {
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            secret: self.secret.as_ref().map(|s| s.expose_secret().to_owned()),
        }
    }
}

/// Splits a comma-separated address list (`a:1,b:2`).
pub fn address_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            store: None,
            bus: "inproc://".to_owned(),
            cache: "memory://".to_owned(),
            services: Role::ALL.to_vec(),
            log_format: LogFormat::Pretty,
            jwt_secret: None,
            auth: AuthSettings::default(),
            messaging: MessagingSettings::default(),
            gateway: GatewaySettings::default(),
            grpc_listen: None,
            remote: RemoteSettings::default(),
            video: chattr_video::VideoSettings::default(),
            otlp: OtlpSettings::default(),
        }
    }
}

impl Settings {
    /// Settings for tests: everything in `data_dir`, cheap password hashing.
    pub fn for_test(data_dir: &Path) -> Self {
        let mut s = Self { data_dir: data_dir.to_owned(), ..Self::default() };
        s.auth.argon2_memory_kib = 1024;
        s.auth.argon2_iterations = 1;
        s
    }

    /// The store URL in effect.
    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("chattr.db").display()))
    }

    /// These settings as a TOML config file (secrets left out), e.g. to start other
    /// processes with the same configuration.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("serialising settings")
    }

    /// Loads defaults, then the TOML file (if any), then `CHATTR__SECTION__KEY` variables.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                text.parse::<toml::Table>().with_context(|| format!("parsing config {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        overlay_env(&mut table, env)?;
        toml::Value::Table(table).try_into().context("invalid configuration")
    }
}

/// Applies `CHATTR__A__B=value` as `a.b = value` (value parsed as TOML if it parses, else a
/// string), so every setting, nested ones included, can come from the environment.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    let vars: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("CHATTR__")).collect();
    for (key, raw) in vars {
        let path: Vec<String> = key["CHATTR__".len()..].split("__").map(|p| p.to_lowercase()).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().context("empty env key")?;
        let mut node = &mut *table;
        for part in parents {
            let entry = node.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().with_context(|| format!("{key}: {part} is not a section"))?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[messaging]\nmax_body_chars = 10\n").unwrap();
        let env = vec![
            ("CHATTR__MESSAGING__MAX_BODY_CHARS".to_owned(), "20".to_owned()),
            ("CHATTR__BUS".to_owned(), "inproc://x".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let s = Settings::load(Some(&file), env).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.messaging.max_body_chars, 20);
        assert_eq!(s.bus, "inproc://x");
        assert_eq!(s.cache, "memory://");
        assert!(Settings::load(None, vec![("CHATTR__NOPE".to_owned(), "1".to_owned())]).is_err());
    }

    #[test]
    fn settings_round_trip_through_toml_without_secrets() {
        let mut s = Settings::for_test(Path::new("/tmp/x"));
        s.gateway.heartbeat_secs = 3;
        s.remote.auth = vec!["127.0.0.1:1".to_owned()];
        s.jwt_secret = Some("top secret value".to_owned().into());
        let text = s.to_toml().unwrap();
        assert!(!text.contains("top secret"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        let back = Settings::load(Some(&file), Vec::new()).unwrap();
        assert_eq!(back.gateway.heartbeat_secs, 3);
        assert_eq!(back.remote.auth, s.remote.auth);
        assert_eq!(back.auth.argon2_iterations, 1);
        assert!(back.jwt_secret.is_none());
    }

    #[test]
    fn roles_parse() {
        assert_eq!(Role::parse_list("all").unwrap(), Role::ALL.to_vec());
        assert_eq!(Role::parse_list("fanout, gateway").unwrap(), vec![Role::Gateway, Role::Fanout]);
        assert!(Role::parse_list("gateway,nope").is_err());
        assert!(Role::parse_list("").is_err());
    }
}
