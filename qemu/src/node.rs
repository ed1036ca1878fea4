//! A node's boot configuration from a kubeconfig: the module the kernel reads to join a
//! cluster (`kubelet_lite::nodecfg`), written to `target/nodes/NAME.cfg`.

use crate::image::target_dir;
use crate::Error;
use kubelet_lite::nodecfg::NodeBootConfig;
use sim_node::kubeconfig::Kubeconfig;
use std::fs;
use std::path::{Path, PathBuf};

/// What to change in the kubeconfig's view when the node reaches the API server another way
/// (e.g. through an emulator's forward).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The server URL the node uses instead of the kubeconfig's.
    pub server: Option<String>,
    /// The certificate name to verify instead of the server URL's host.
    pub tls_server_name: Option<String>,
}

/// The configuration for node `name` from the kubeconfig at `path`.
pub fn from_kubeconfig(path: &Path, name: &str, reach: &Reach) -> Result<NodeBootConfig, Error> {
    let k = Kubeconfig::load(path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let bad = |why: String| Error::Usage(format!("{}: {why}", path.display()));
    if k.insecure {
        return Err(bad("insecure-skip-tls-verify is set: a node verifies its API server".into()));
    }
    let ca = k.ca_pem.ok_or_else(|| bad("no certificate-authority or certificate-authority-data".into()))?;
    let ca = String::from_utf8(ca).map_err(|_| bad("the CA is not PEM text".into()))?;
    let token = k
        .token
        .ok_or_else(|| bad("the user has no token (a node authenticates with a bearer token)".into()))?;
    let c = NodeBootConfig {
        node_name: name.to_string(),
        server: reach.server.clone().unwrap_or(k.server),
        tls_server_name: reach.tls_server_name.clone().or(k.tls_server_name),
        certificate_authority: ca,
        token,
        node_ip: None,
        kubelet_port: None,
        kubelet_certificate: None,
        kubelet_key: None,
    };
    c.check().map_err(|e| bad(e.to_string()))?;
    Ok(c)
}

/// Writes `config`'s module to `target/nodes/NAME.cfg` and returns the path.
pub fn write_module(config: &NodeBootConfig) -> Result<PathBuf, Error> {
    let bytes = config.to_module().map_err(|e| Error::Usage(format!("node configuration: {e}")))?;
    let dir = target_dir().join("nodes");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{}.cfg", config.node_name));
    fs::write(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBAQ==\n-----END CERTIFICATE-----\n";

    fn kubeconfig(dir: &Path, user: &str) -> PathBuf {
        use base64::Engine as _;
        use std::io::Write as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    \
             server: https://127.0.0.1:6443\n  name: dev\nusers:\n- name: n1\n  user:\n{user}"
        );
        let path = dir.join("k.kubeconfig");
        fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())).unwrap();
        path
    }

    #[test]
    fn a_kubeconfig_becomes_a_module_and_bad_ones_say_why() {
        let dir = std::env::temp_dir().join(format!("node-cfg-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let k = kubeconfig(&dir, "    token: n1.secret\n");
        let c = from_kubeconfig(&k, "n1", &Reach::default()).unwrap();
        assert_eq!(
            (c.server.as_str(), c.token.as_str(), c.tls_server_name.as_deref()),
            ("https://127.0.0.1:6443", "n1.secret", None)
        );
        assert_eq!(c.certificate_authority, CA);
        let reach = Reach {
            server: Some("https://10.0.2.100:6443".into()),
            tls_server_name: Some("127.0.0.1".into()),
        };
        let c = from_kubeconfig(&k, "n1", &reach).unwrap();
        assert_eq!(c.verify_name().unwrap(), "127.0.0.1");
        let m = fs::read(write_module(&c).unwrap()).unwrap();
        assert_eq!(NodeBootConfig::from_module(&m).unwrap(), c);
        let e = from_kubeconfig(&k, "N1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("nodeName must be a lowercase RFC 1123 subdomain"), "{e}");
        let no_token = kubeconfig(&dir, "    username: x\n");
        let e = from_kubeconfig(&no_token, "n1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("the user has no token"), "{e}");
        let e = from_kubeconfig(&dir.join("missing"), "n1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
