//! The kubeconfig files written under `DIR`: `admin.kubeconfig` and `node.kubeconfig`.

use base64::Engine;
use serde_json::json;
use std::io;
use std::path::Path;

/// A kubeconfig (YAML) for `server` trusting `ca_pem` (absent for plain HTTP) with `token`.
pub fn render(server: &str, ca_pem: Option<&str>, user: &str, token: &str) -> String {
    let mut cluster = serde_json::Map::new();
    cluster.insert("server".into(), json!(server));
    if let Some(ca) = ca_pem {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        cluster.insert("certificate-authority-data".into(), json!(ca));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "control-plane", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "control-plane", "context": {"cluster": "control-plane", "user": user, "namespace": "default"}}],
        "current-context": "control-plane",
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// Writes `DIR/<name>.kubeconfig` (owner-readable only).
pub fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    crate::tls::write_private(&dir.join(format!("{name}.kubeconfig")), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_round_trips_as_yaml() {
        let text = render("https://127.0.0.1:6443", Some("PEM"), "admin", "tok");
        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], "UEVN");
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(v["current-context"], "control-plane");
        let plain = render("http://127.0.0.1:1", None, "node", "t");
        assert!(!plain.contains("certificate-authority-data"));
    }
}
