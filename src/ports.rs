//! Opens the OS port the configuration names.
use latchkey_platform::linux::{LinuxConfig, LinuxPort};
use latchkey_platform::sim::SimPort;
use latchkey_platform::DevicePort;

use crate::config::{Config, PortKind};

/// Opens the configured port.
pub fn open(config: &Config) -> anyhow::Result<Box<dyn DevicePort>> {
    let p = &config.platform;
    Ok(match p.port {
        PortKind::Sim => {
            let path = p.sim_state.as_ref().ok_or_else(|| anyhow::anyhow!("platform.sim_state is not set"))?;
            Box::new(SimPort::open(path)?)
        }
        PortKind::Linux => {
            let policy = match &p.policy_file {
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    Some(
                        latchkey_platform::policy::profile::parse(&bytes)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            Box::new(LinuxPort::new(LinuxConfig {
                root: p.linux_root.clone(),
                user: p.linux_user.clone(),
                policy,
                lock_command: p.lock_command.clone(),
                effects_file: config.state.dir.join("linux-effects.json"),
            })?)
        }
        PortKind::Bridge => {
            let path = p.bridge_socket.as_ref().ok_or_else(|| anyhow::anyhow!("platform.bridge_socket is not set"))?;
            Box::new(crate::bridge::BridgePort::new(path))
        }
    })
}
