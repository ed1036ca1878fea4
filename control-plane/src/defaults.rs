//! The checks and defaults the server applies on every write (pods: containers, phase, qosClass
//! and the usual spec defaults).

use serde_json::{json, Value};

fn set_default(obj: &mut Value, field: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(field.to_string()).or_insert(v);
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(res));
            let r = req.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Checks `obj` of `kind` and fills in defaults; the error is the field message of an Invalid.
pub fn validate_and_default(kind: &str, obj: &mut Value) -> Result<(), String> {
    if kind != "Pod" {
        return Ok(());
    }
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return Err("spec.containers: Required value".into());
    };
    let containers = spec.get_mut("containers").and_then(Value::as_array_mut);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Err("spec.containers: Required value".into());
    };
    for (i, c) in containers.iter_mut().enumerate() {
        if c.get("name").and_then(Value::as_str).is_none_or(|n| n.is_empty()) {
            return Err(format!("spec.containers[{i}].name: Required value"));
        }
        let Some(image) =
            c.get("image").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string)
        else {
            return Err(format!("spec.containers[{i}].image: Required value"));
        };
        let tagged =
            image.rsplit('/').next().is_some_and(|last| last.contains(':') && !last.ends_with(":latest"));
        set_default(
            c,
            "imagePullPolicy",
            json!(if tagged || image.contains('@') { "IfNotPresent" } else { "Always" }),
        );
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "securityContext", json!({}));
    let qos = qos_class(spec);
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    set_default(&mut obj["status"], "phase", json!("Pending"));
    obj["status"]["qosClass"] = json!(qos);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_defaults_and_qos() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.36",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        validate_and_default("Pod", &mut p).unwrap();
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(p["status"]["phase"], "Pending");
        let mut b = json!({"spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}});
        validate_and_default("Pod", &mut b).unwrap();
        assert_eq!(b["status"]["qosClass"], "Burstable");
        assert_eq!(b["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let mut e = json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        validate_and_default("Pod", &mut e).unwrap();
        assert_eq!(e["status"]["qosClass"], "BestEffort");
        assert!(validate_and_default("Pod", &mut json!({"spec": {"containers": []}})).is_err());
        assert!(validate_and_default("Pod", &mut json!({"spec": {"containers": [{"name": "c"}]}}))
            .unwrap_err()
            .contains("image"));
        assert!(validate_and_default("Node", &mut json!({})).is_ok());
    }
}
