//! Opens the OS port the configuration names.
use latchkey_platform::linux::{LinuxConfig, LinuxPort};
use latchkey_platform::sim::SimPort;
use latchkey_platform::{DevicePort, PortError};

use crate::config::{Config, PortKind};

/// Opens the configured port.
pub fn open(config: &Config) -> Result<Box<dyn DevicePort>, PortError> {
    let p = &config.platform;
    let missing = |key: &str| PortError::Unavailable(format!("platform.{key} is not set"));
    Ok(match p.port {
        PortKind::Sim => Box::new(SimPort::open(p.sim_state.as_ref().ok_or_else(|| missing("sim_state"))?)?),
        PortKind::Linux => {
            let policy = match &p.policy_file {
                Some(path) => {
                    let bytes =
                        std::fs::read(path).map_err(|e| PortError::Unavailable(format!("{}: {e}", path.display())))?;
                    Some(
                        latchkey_platform::policy::profile::parse(&bytes)
                            .map_err(|e| PortError::Unavailable(format!("{}: {e}", path.display())))?,
                    )
                }
                None => None,
            };
            Box::new(LinuxPort::new(LinuxConfig {
                root: p.linux_root.clone(),
                user: p.linux_user.clone(),
                policy,
                lock_command: p.lock_command.clone(),
                lock_timeout: p.lock_timeout,
                effects_file: config.state.dir.join("linux-effects.json"),
            })?)
        }
        PortKind::Bridge => {
            Box::new(crate::bridge::BridgePort::new(p.bridge_socket.as_ref().ok_or_else(|| missing("bridge_socket"))?))
        }
    })
}
