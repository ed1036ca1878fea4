//! The control plane's own descriptions of the API types it serves, and the OpenAPI v3 documents
//! generated from them (`/openapi/v3` and `/openapi/v3/<group-version>`).
//!
//! [`TYPES`] is a compact table: one row per type with its fields and a type spec per field:
//! - scalars `string`, `int32`, `int64`, `bool`, `number`, and the named formats `time` (RFC 3339
//!   seconds), `microtime`, `quantity`, `intorstring`, `bytes` (a Go `[]byte`: standard base64 in
//!   JSON);
//! - `{T}`: a map from string to `T`; `[T]`: an atomic list of `T`; `[T]@key`: a list merged by `key`
//!   under strategic merge patch; `[T]@`: a list of scalars merged as a set;
//! - `object`: a nested object whose fields are not described (any field accepted);
//! - any other word is the name of another row.
//!
//! The same table drives unknown-field detection in [`crate::validate`]. The documents carry what
//! kubectl reads from them: a PATCH operation per kind with the `fieldValidation` query parameter (so
//! kubectl leaves field validation to the server), `x-kubernetes-group-version-kind` on operations and
//! schemas, and the patch strategy and merge key of list fields (for its 3-way strategic patches).

use serde_json::{json, Map, Value};

/// Where a type lives: decides its schema name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// core/v1 (`io.k8s.api.core.v1.`).
    Core,
    /// coordination.k8s.io/v1 (`io.k8s.api.coordination.v1.`).
    Coordination,
    /// meta/v1 (`io.k8s.apimachinery.pkg.apis.meta.v1.`).
    Meta,
}

impl Package {
    /// The schema-name prefix of types in this package.
    pub fn prefix(self) -> &'static str {
        match self {
            Package::Core => "io.k8s.api.core.v1.",
            Package::Coordination => "io.k8s.api.coordination.v1.",
            Package::Meta => "io.k8s.apimachinery.pkg.apis.meta.v1.",
        }
    }
}

/// One described type.
#[derive(Debug)]
pub struct TypeDef {
    /// Short name (`Pod`, `ObjectMeta`).
    pub name: &'static str,
    /// Package of the type.
    pub package: Package,
    /// One-line description.
    pub description: &'static str,
    /// `(field, type spec)` pairs.
    pub fields: &'static [(&'static str, &'static str)],
    /// Fields that must be present.
    pub required: &'static [&'static str],
}

impl TypeDef {
    /// The full schema name (`io.k8s.api.core.v1.Pod`).
    pub fn schema_name(&self) -> String {
        format!("{}{}", self.package.prefix(), self.name)
    }

    /// The type spec of `field`, if the type declares it.
    pub fn field(&self, field: &str) -> Option<&'static str> {
        self.fields.iter().find(|(f, _)| *f == field).map(|(_, s)| *s)
    }
}

macro_rules! ty {
    ($name:literal, $pkg:ident, $desc:literal, [$($f:literal : $s:literal),* $(,)?], [$($r:literal),*]) => {
        TypeDef {
            name: $name,
            package: Package::$pkg,
            description: $desc,
            fields: &[$(($f, $s)),*],
            required: &[$($r),*],
        }
    };
}

const CONTAINER_DESC: &str = "A single application container run in a pod.";

/// Every type the control plane describes.
pub static TYPES: &[TypeDef] = &[
    // --- meta/v1 ---
    ty!("ObjectMeta", Meta, "Metadata every persisted object carries.", [
        "annotations": "{string}", "creationTimestamp": "time", "deletionGracePeriodSeconds": "int64",
        "deletionTimestamp": "time", "finalizers": "[string]@", "generateName": "string", "generation": "int64",
        "labels": "{string}", "managedFields": "[ManagedFieldsEntry]", "name": "string", "namespace": "string",
        "ownerReferences": "[OwnerReference]@uid", "resourceVersion": "string", "selfLink": "string", "uid": "string",
    ], []),
    ty!("ManagedFieldsEntry", Meta, "The fields a manager owns.", [
        "apiVersion": "string", "fieldsType": "string", "fieldsV1": "object", "manager": "string",
        "operation": "string", "subresource": "string", "time": "time",
    ], []),
    ty!("OwnerReference", Meta, "An object that owns this one.", [
        "apiVersion": "string", "blockOwnerDeletion": "bool", "controller": "bool", "kind": "string",
        "name": "string", "uid": "string",
    ], ["apiVersion", "kind", "name", "uid"]),
    ty!("ListMeta", Meta, "Metadata of a list.", [
        "continue": "string", "remainingItemCount": "int64", "resourceVersion": "string", "selfLink": "string",
    ], []),
    ty!("Status", Meta, "The result of an operation that returns no object.", [
        "apiVersion": "string", "code": "int32", "details": "object", "kind": "string", "message": "string",
        "metadata": "ListMeta", "reason": "string", "status": "string",
    ], []),
    ty!("DeleteOptions", Meta, "Options of a DELETE.", [
        "apiVersion": "string", "dryRun": "[string]", "gracePeriodSeconds": "int64", "ignoreStoreReadErrorWithClusterBreakingPotential": "bool",
        "kind": "string", "orphanDependents": "bool", "preconditions": "Preconditions", "propagationPolicy": "string",
    ], []),
    ty!("Preconditions", Meta, "Conditions a DELETE requires.", ["resourceVersion": "string", "uid": "string"], []),
    ty!("Patch", Meta, "A patch body in one of the accepted patch formats.", [], []),
    // --- core/v1 Pod ---
    ty!("Pod", Core, "A group of containers run together on one node.", [
        "apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "PodSpec", "status": "PodStatus",
    ], []),
    ty!("PodList", Core, "A list of pods.", [
        "apiVersion": "string", "items": "[Pod]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    ty!("PodSpec", Core, "The desired behaviour of a pod.", [
        "activeDeadlineSeconds": "int64", "affinity": "object", "automountServiceAccountToken": "bool",
        "containers": "[Container]@name", "dnsConfig": "PodDNSConfig", "dnsPolicy": "string",
        "enableServiceLinks": "bool", "ephemeralContainers": "[object]@name", "hostAliases": "[HostAlias]@ip",
        "hostIPC": "bool", "hostNetwork": "bool", "hostPID": "bool", "hostUsers": "bool", "hostname": "string",
        "imagePullSecrets": "[LocalObjectReference]@name", "initContainers": "[Container]@name",
        "nodeName": "string", "nodeSelector": "{string}", "os": "PodOS", "overhead": "{quantity}",
        "preemptionPolicy": "string", "priority": "int32", "priorityClassName": "string",
        "readinessGates": "[PodReadinessGate]", "resourceClaims": "[PodResourceClaim]@name",
        "resources": "ResourceRequirements", "restartPolicy": "string", "runtimeClassName": "string",
        "schedulerName": "string", "schedulingGates": "[PodSchedulingGate]@name", "securityContext": "object",
        "serviceAccount": "string", "serviceAccountName": "string", "setHostnameAsFQDN": "bool",
        "shareProcessNamespace": "bool", "subdomain": "string", "terminationGracePeriodSeconds": "int64",
        "tolerations": "[Toleration]", "topologySpreadConstraints": "[object]@topologyKey",
        "volumes": "[Volume]@name",
    ], ["containers"]),
    TypeDef {
        name: "Container",
        package: Package::Core,
        description: CONTAINER_DESC,
        fields: &[
            ("args", "[string]"),
            ("command", "[string]"),
            ("env", "[EnvVar]@name"),
            ("envFrom", "[EnvFromSource]"),
            ("image", "string"),
            ("imagePullPolicy", "string"),
            ("lifecycle", "Lifecycle"),
            ("livenessProbe", "Probe"),
            ("name", "string"),
            ("ports", "[ContainerPort]@containerPort"),
            ("readinessProbe", "Probe"),
            ("resizePolicy", "[ContainerResizePolicy]"),
            ("resources", "ResourceRequirements"),
            ("restartPolicy", "string"),
            ("securityContext", "SecurityContext"),
            ("startupProbe", "Probe"),
            ("stdin", "bool"),
            ("stdinOnce", "bool"),
            ("terminationMessagePath", "string"),
            ("terminationMessagePolicy", "string"),
            ("tty", "bool"),
            ("volumeDevices", "[VolumeDevice]@devicePath"),
            ("volumeMounts", "[VolumeMount]@mountPath"),
            ("workingDir", "string"),
        ],
        required: &["name"],
    },
    ty!("ContainerPort", Core, "A network port of a container.", [
        "containerPort": "int32", "hostIP": "string", "hostPort": "int32", "name": "string", "protocol": "string",
    ], ["containerPort"]),
    ty!("EnvVar", Core, "An environment variable of a container.", [
        "name": "string", "value": "string", "valueFrom": "EnvVarSource",
    ], ["name"]),
    ty!("EnvVarSource", Core, "Where an environment variable's value comes from.", [
        "configMapKeyRef": "ConfigMapKeySelector", "fieldRef": "ObjectFieldSelector",
        "resourceFieldRef": "ResourceFieldSelector", "secretKeyRef": "SecretKeySelector",
    ], []),
    ty!("ConfigMapKeySelector", Core, "A key of a ConfigMap.", ["key": "string", "name": "string", "optional": "bool"], ["key"]),
    ty!("SecretKeySelector", Core, "A key of a Secret.", ["key": "string", "name": "string", "optional": "bool"], ["key"]),
    ty!("ObjectFieldSelector", Core, "A field of the pod.", ["apiVersion": "string", "fieldPath": "string"], ["fieldPath"]),
    ty!("ResourceFieldSelector", Core, "A resource of a container.", [
        "containerName": "string", "divisor": "quantity", "resource": "string",
    ], ["resource"]),
    ty!("EnvFromSource", Core, "A source of a set of environment variables.", [
        "configMapRef": "ConfigMapEnvSource", "prefix": "string", "secretRef": "SecretEnvSource",
    ], []),
    ty!("ConfigMapEnvSource", Core, "A ConfigMap used as environment.", ["name": "string", "optional": "bool"], []),
    ty!("SecretEnvSource", Core, "A Secret used as environment.", ["name": "string", "optional": "bool"], []),
    ty!("ResourceRequirements", Core, "Compute resources requested and limited.", [
        "claims": "[ResourceClaim]", "limits": "{quantity}", "requests": "{quantity}",
    ], []),
    ty!("ResourceClaim", Core, "A resource claim a container uses.", ["name": "string", "request": "string"], ["name"]),
    ty!("ContainerResizePolicy", Core, "How a resource of a container is resized.", [
        "resourceName": "string", "restartPolicy": "string",
    ], ["resourceName", "restartPolicy"]),
    ty!("VolumeMount", Core, "A volume mounted into a container.", [
        "mountPath": "string", "mountPropagation": "string", "name": "string", "readOnly": "bool",
        "recursiveReadOnly": "string", "subPath": "string", "subPathExpr": "string",
    ], ["name", "mountPath"]),
    ty!("VolumeDevice", Core, "A raw block device of a container.", ["devicePath": "string", "name": "string"], ["name", "devicePath"]),
    ty!("Probe", Core, "A health check of a container.", [
        "exec": "ExecAction", "failureThreshold": "int32", "grpc": "GRPCAction", "httpGet": "HTTPGetAction",
        "initialDelaySeconds": "int32", "periodSeconds": "int32", "successThreshold": "int32",
        "tcpSocket": "TCPSocketAction", "terminationGracePeriodSeconds": "int64", "timeoutSeconds": "int32",
    ], []),
    ty!("ExecAction", Core, "A command run in the container.", ["command": "[string]"], []),
    ty!("HTTPGetAction", Core, "An HTTP GET request.", [
        "host": "string", "httpHeaders": "[HTTPHeader]", "path": "string", "port": "intorstring", "scheme": "string",
    ], ["port"]),
    ty!("HTTPHeader", Core, "An HTTP header.", ["name": "string", "value": "string"], ["name", "value"]),
    ty!("TCPSocketAction", Core, "A TCP connection attempt.", ["host": "string", "port": "intorstring"], ["port"]),
    ty!("GRPCAction", Core, "A gRPC health check.", ["port": "int32", "service": "string"], ["port"]),
    ty!("Lifecycle", Core, "Actions on container start and stop.", [
        "postStart": "LifecycleHandler", "preStop": "LifecycleHandler",
    ], []),
    ty!("LifecycleHandler", Core, "One lifecycle action.", [
        "exec": "ExecAction", "httpGet": "HTTPGetAction", "sleep": "SleepAction", "tcpSocket": "TCPSocketAction",
    ], []),
    ty!("SleepAction", Core, "A pause.", ["seconds": "int64"], ["seconds"]),
    ty!("SecurityContext", Core, "Security options of a container.", [
        "allowPrivilegeEscalation": "bool", "appArmorProfile": "object", "capabilities": "Capabilities",
        "privileged": "bool", "procMount": "string", "readOnlyRootFilesystem": "bool", "runAsGroup": "int64",
        "runAsNonRoot": "bool", "runAsUser": "int64", "seLinuxOptions": "object", "seccompProfile": "object",
        "windowsOptions": "object",
    ], []),
    ty!("Capabilities", Core, "Capabilities added and dropped.", ["add": "[string]", "drop": "[string]"], []),
    ty!("PodDNSConfig", Core, "DNS settings of a pod.", [
        "nameservers": "[string]", "options": "[PodDNSConfigOption]", "searches": "[string]",
    ], []),
    ty!("PodDNSConfigOption", Core, "A resolver option.", ["name": "string", "value": "string"], []),
    ty!("HostAlias", Core, "An /etc/hosts entry.", ["hostnames": "[string]", "ip": "string"], ["ip"]),
    ty!("LocalObjectReference", Core, "A reference to an object in the same namespace.", ["name": "string"], []),
    ty!("PodOS", Core, "The operating system of a pod.", ["name": "string"], ["name"]),
    ty!("PodReadinessGate", Core, "An extra condition for readiness.", ["conditionType": "string"], ["conditionType"]),
    ty!("PodResourceClaim", Core, "A resource claim of a pod.", [
        "name": "string", "resourceClaimName": "string", "resourceClaimTemplateName": "string",
    ], ["name"]),
    ty!("PodSchedulingGate", Core, "A gate that holds back scheduling.", ["name": "string"], ["name"]),
    ty!("Toleration", Core, "A taint the pod tolerates.", [
        "effect": "string", "key": "string", "operator": "string", "tolerationSeconds": "int64", "value": "string",
    ], []),
    ty!("Volume", Core, "A volume pods' containers can mount.", [
        "awsElasticBlockStore": "object", "azureDisk": "object", "azureFile": "object", "cephfs": "object",
        "cinder": "object", "configMap": "ConfigMapVolumeSource", "csi": "object", "downwardAPI": "object",
        "emptyDir": "EmptyDirVolumeSource", "ephemeral": "object", "fc": "object", "flexVolume": "object",
        "flocker": "object", "gcePersistentDisk": "object", "gitRepo": "object", "glusterfs": "object",
        "hostPath": "HostPathVolumeSource", "image": "object", "iscsi": "object", "name": "string", "nfs": "object",
        "persistentVolumeClaim": "object", "photonPersistentDisk": "object", "portworxVolume": "object",
        "projected": "object", "quobyte": "object", "rbd": "object", "scaleIO": "object",
        "secret": "SecretVolumeSource", "storageos": "object", "vsphereVolume": "object",
    ], ["name"]),
    ty!("EmptyDirVolumeSource", Core, "A scratch directory.", ["medium": "string", "sizeLimit": "quantity"], []),
    ty!("HostPathVolumeSource", Core, "A path on the node.", ["path": "string", "type": "string"], ["path"]),
    ty!("ConfigMapVolumeSource", Core, "A ConfigMap as files.", [
        "defaultMode": "int32", "items": "[KeyToPath]", "name": "string", "optional": "bool",
    ], []),
    ty!("SecretVolumeSource", Core, "A Secret as files.", [
        "defaultMode": "int32", "items": "[KeyToPath]", "optional": "bool", "secretName": "string",
    ], []),
    ty!("KeyToPath", Core, "A key projected to a file.", ["key": "string", "mode": "int32", "path": "string"], ["key", "path"]),
    ty!("PodStatus", Core, "The observed state of a pod.", [
        "conditions": "[PodCondition]@type", "containerStatuses": "[ContainerStatus]",
        "ephemeralContainerStatuses": "[ContainerStatus]", "hostIP": "string", "hostIPs": "[HostIP]@ip",
        "initContainerStatuses": "[ContainerStatus]", "message": "string", "nominatedNodeName": "string",
        "phase": "string", "podIP": "string", "podIPs": "[PodIP]@ip", "qosClass": "string", "reason": "string",
        "resize": "string", "resourceClaimStatuses": "[object]@name", "startTime": "time",
    ], []),
    ty!("PodCondition", Core, "A condition of a pod.", [
        "lastProbeTime": "time", "lastTransitionTime": "time", "message": "string", "reason": "string",
        "status": "string", "type": "string",
    ], ["type", "status"]),
    ty!("PodIP", Core, "An IP address of a pod.", ["ip": "string"], ["ip"]),
    ty!("HostIP", Core, "An IP address of the pod's node.", ["ip": "string"], ["ip"]),
    ty!("ContainerStatus", Core, "The observed state of a container.", [
        "allocatedResources": "{quantity}", "allocatedResourcesStatus": "[object]@name", "containerID": "string",
        "image": "string", "imageID": "string", "lastState": "ContainerState", "name": "string", "ready": "bool",
        "resources": "ResourceRequirements", "restartCount": "int32", "started": "bool", "state": "ContainerState",
        "user": "object", "volumeMounts": "[object]@mountPath",
    ], ["name", "ready", "restartCount", "image", "imageID"]),
    ty!("ContainerState", Core, "Exactly one state of a container.", [
        "running": "ContainerStateRunning", "terminated": "ContainerStateTerminated",
        "waiting": "ContainerStateWaiting",
    ], []),
    ty!("ContainerStateRunning", Core, "A running container.", ["startedAt": "time"], []),
    ty!("ContainerStateTerminated", Core, "A container that exited.", [
        "containerID": "string", "exitCode": "int32", "finishedAt": "time", "message": "string", "reason": "string",
        "signal": "int32", "startedAt": "time",
    ], ["exitCode"]),
    ty!("ContainerStateWaiting", Core, "A container not yet running.", ["message": "string", "reason": "string"], []),
    // --- core/v1 Node ---
    ty!("Node", Core, "A worker machine.", [
        "apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "NodeSpec", "status": "NodeStatus",
    ], []),
    ty!("NodeList", Core, "A list of nodes.", [
        "apiVersion": "string", "items": "[Node]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    ty!("NodeSpec", Core, "The desired state of a node.", [
        "configSource": "object", "externalID": "string", "podCIDR": "string", "podCIDRs": "[string]@",
        "providerID": "string", "taints": "[Taint]", "unschedulable": "bool",
    ], []),
    ty!("Taint", Core, "A taint on a node.", [
        "effect": "string", "key": "string", "timeAdded": "time", "value": "string",
    ], ["key", "effect"]),
    ty!("NodeStatus", Core, "The observed state of a node.", [
        "addresses": "[NodeAddress]@type", "allocatable": "{quantity}", "capacity": "{quantity}",
        "conditions": "[NodeCondition]@type", "config": "object", "daemonEndpoints": "NodeDaemonEndpoints",
        "features": "object", "images": "[ContainerImage]", "nodeInfo": "NodeSystemInfo", "phase": "string",
        "runtimeHandlers": "[object]", "volumesAttached": "[object]", "volumesInUse": "[string]",
    ], []),
    ty!("NodeCondition", Core, "A condition of a node.", [
        "lastHeartbeatTime": "time", "lastTransitionTime": "time", "message": "string", "reason": "string",
        "status": "string", "type": "string",
    ], ["type", "status"]),
    ty!("NodeAddress", Core, "An address of a node.", ["address": "string", "type": "string"], ["type", "address"]),
    ty!("NodeDaemonEndpoints", Core, "Ports of the node's daemons.", ["kubeletEndpoint": "DaemonEndpoint"], []),
    ty!("DaemonEndpoint", Core, "A daemon's port.", ["Port": "int32"], ["Port"]),
    ty!("NodeSystemInfo", Core, "Facts about the node's software.", [
        "architecture": "string", "bootID": "string", "containerRuntimeVersion": "string", "kernelVersion": "string",
        "kubeProxyVersion": "string", "kubeletVersion": "string", "machineID": "string", "operatingSystem": "string",
        "osImage": "string", "systemUUID": "string",
    ], ["machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
        "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture"]),
    ty!("ContainerImage", Core, "An image present on a node.", ["names": "[string]", "sizeBytes": "int64"], []),
    // --- core/v1 Namespace ---
    ty!("Namespace", Core, "A scope for names.", [
        "apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "NamespaceSpec",
        "status": "NamespaceStatus",
    ], []),
    ty!("NamespaceList", Core, "A list of namespaces.", [
        "apiVersion": "string", "items": "[Namespace]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    ty!("NamespaceSpec", Core, "The desired state of a namespace.", ["finalizers": "[string]"], []),
    ty!("NamespaceStatus", Core, "The observed state of a namespace.", [
        "conditions": "[NamespaceCondition]@type", "phase": "string",
    ], []),
    ty!("NamespaceCondition", Core, "A condition of a namespace.", [
        "lastTransitionTime": "time", "message": "string", "reason": "string", "status": "string", "type": "string",
    ], ["type", "status"]),
    // --- core/v1 Event ---
    ty!("Event", Core, "A report of something that happened to an object.", [
        "action": "string", "apiVersion": "string", "count": "int32", "eventTime": "microtime",
        "firstTimestamp": "time", "involvedObject": "ObjectReference", "kind": "string", "lastTimestamp": "time",
        "message": "string", "metadata": "ObjectMeta", "reason": "string", "related": "ObjectReference",
        "reportingComponent": "string", "reportingInstance": "string", "series": "EventSeries",
        "source": "EventSource", "type": "string",
    ], ["metadata", "involvedObject"]),
    ty!("EventList", Core, "A list of events.", [
        "apiVersion": "string", "items": "[Event]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    ty!("ObjectReference", Core, "A reference to an object.", [
        "apiVersion": "string", "fieldPath": "string", "kind": "string", "name": "string", "namespace": "string",
        "resourceVersion": "string", "uid": "string",
    ], []),
    ty!("EventSource", Core, "The component that reported an event.", ["component": "string", "host": "string"], []),
    ty!("EventSeries", Core, "A series of repeated events.", ["count": "int32", "lastObservedTime": "microtime"], []),
    // --- core/v1 Secret ---
    ty!("Secret", Core, "Named pieces of sensitive data, such as registry credentials.", [
        "apiVersion": "string", "data": "{bytes}", "immutable": "bool", "kind": "string", "metadata": "ObjectMeta",
        "stringData": "{string}", "type": "string",
    ], []),
    ty!("SecretList", Core, "A list of secrets.", [
        "apiVersion": "string", "items": "[Secret]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    // --- coordination.k8s.io/v1 ---
    ty!("Lease", Coordination, "A lease held by one holder.", [
        "apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "LeaseSpec",
    ], []),
    ty!("LeaseList", Coordination, "A list of leases.", [
        "apiVersion": "string", "items": "[Lease]", "kind": "string", "metadata": "ListMeta",
    ], ["items"]),
    ty!("LeaseSpec", Coordination, "The state of a lease.", [
        "acquireTime": "microtime", "holderIdentity": "string", "leaseDurationSeconds": "int32",
        "leaseTransitions": "int32", "preferredHolder": "string", "renewTime": "microtime", "strategy": "string",
    ], []),
];

/// The described type named `name`.
pub fn type_def(name: &str) -> Option<&'static TypeDef> {
    TYPES.iter().find(|t| t.name == name)
}

/// A parsed field type spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec<'a> {
    /// A scalar or named format: `string`, `int32`, `int64`, `bool`, `number`, `time`, `microtime`,
    /// `quantity`, `intorstring`, `bytes`.
    Scalar(&'a str),
    /// A map from string to the inner spec.
    Map(Box<Spec<'a>>),
    /// A list; `merge_key` is `Some("")` for a set of scalars, `Some(k)` for a list merged by `k`.
    List(Box<Spec<'a>>, Option<&'a str>),
    /// An object with undescribed fields.
    Open,
    /// A described type.
    Ref(&'a str),
}

const SCALARS: &[&str] =
    &["string", "int32", "int64", "bool", "number", "time", "microtime", "quantity", "intorstring", "bytes"];

/// Parses a type spec of [`TYPES`].
pub fn parse_spec(spec: &str) -> Spec<'_> {
    if let Some(inner) = spec.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        return Spec::Map(Box::new(parse_spec(inner)));
    }
    if let Some(rest) = spec.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']').unwrap_or((rest, ""));
        return Spec::List(Box::new(parse_spec(inner)), tail.strip_prefix('@'));
    }
    if spec == "object" {
        Spec::Open
    } else if SCALARS.contains(&spec) {
        Spec::Scalar(spec)
    } else {
        Spec::Ref(spec)
    }
}

/// A group-version the control plane serves, with the kinds whose schemas and operations its OpenAPI
/// document carries.
struct GroupVersion {
    /// Discovery path without the leading slash (`api/v1`).
    path: &'static str,
    group: &'static str,
    version: &'static str,
    /// `(kind, plural, namespaced)`.
    kinds: &'static [(&'static str, &'static str, bool)],
}

static GROUP_VERSIONS: &[GroupVersion] = &[
    GroupVersion {
        path: "api/v1",
        group: "",
        version: "v1",
        kinds: &[
            ("Pod", "pods", true),
            ("Node", "nodes", false),
            ("Namespace", "namespaces", false),
            ("Event", "events", true),
            ("Secret", "secrets", true),
        ],
    },
    GroupVersion {
        path: "apis/coordination.k8s.io/v1",
        group: "coordination.k8s.io",
        version: "v1",
        kinds: &[("Lease", "leases", true)],
    },
];

/// The discovery paths that have an OpenAPI v3 document (`api/v1`, `apis/coordination.k8s.io/v1`).
pub fn openapi_v3_paths() -> impl Iterator<Item = &'static str> {
    GROUP_VERSIONS.iter().map(|g| g.path)
}

fn ref_to(schema: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{schema}")})
}

fn schema_name_of(type_name: &str) -> String {
    type_def(type_name).map(TypeDef::schema_name).unwrap_or_else(|| type_name.to_string())
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICROTIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

fn spec_schema(spec: &Spec<'_>, refs: &mut Vec<String>) -> Value {
    match spec {
        Spec::Scalar("string") => json!({"type": "string"}),
        Spec::Scalar("int32") => json!({"type": "integer", "format": "int32"}),
        Spec::Scalar("int64") => json!({"type": "integer", "format": "int64"}),
        Spec::Scalar("bool") => json!({"type": "boolean"}),
        Spec::Scalar("number") => json!({"type": "number", "format": "double"}),
        Spec::Scalar("bytes") => json!({"type": "string", "format": "byte"}),
        Spec::Scalar("time") => json!({"allOf": [ref_to(TIME)]}),
        Spec::Scalar("microtime") => json!({"allOf": [ref_to(MICROTIME)]}),
        Spec::Scalar("quantity") => json!({"allOf": [ref_to(QUANTITY)]}),
        Spec::Scalar(_) => json!({"allOf": [ref_to(INT_OR_STRING)]}),
        Spec::Map(inner) => json!({"type": "object", "additionalProperties": spec_schema(inner, refs)}),
        Spec::List(inner, key) => {
            let mut s = Map::new();
            s.insert("type".into(), json!("array"));
            s.insert("items".into(), spec_schema(inner, refs));
            let mut set = |k: &str, v: Value| s.insert(k.into(), v);
            match key {
                Some("") => {
                    set("x-kubernetes-list-type", json!("set"));
                    set("x-kubernetes-patch-strategy", json!("merge"));
                }
                Some(k) => {
                    set("x-kubernetes-list-type", json!("map"));
                    set("x-kubernetes-list-map-keys", json!([k]));
                    set("x-kubernetes-patch-merge-key", json!(k));
                    set("x-kubernetes-patch-strategy", json!("merge"));
                }
                None => {
                    set("x-kubernetes-list-type", json!("atomic"));
                }
            }
            Value::Object(s)
        }
        Spec::Open => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        Spec::Ref(name) => {
            refs.push((*name).to_string());
            json!({"allOf": [ref_to(&schema_name_of(name))], "default": {}})
        }
    }
}

fn gvk_of(type_def: &TypeDef) -> Option<Value> {
    GROUP_VERSIONS.iter().find_map(|g| {
        g.kinds
            .iter()
            .find(|(k, _, _)| *k == type_def.name || type_def.name.strip_suffix("List") == Some(k))
            .filter(|_| type_def.package != Package::Meta)
            .map(|_| json!([{"group": g.group, "version": g.version, "kind": type_def.name}]))
    })
}

fn type_schema(t: &TypeDef, refs: &mut Vec<String>) -> Value {
    let mut props = Map::new();
    for (field, spec) in t.fields {
        props.insert((*field).to_string(), spec_schema(&parse_spec(spec), refs));
    }
    let mut s = Map::new();
    s.insert("type".into(), json!("object"));
    s.insert("description".into(), json!(t.description));
    s.insert("properties".into(), Value::Object(props));
    if !t.required.is_empty() {
        s.insert("required".into(), json!(t.required));
    }
    if let Some(gvk) = gvk_of(t) {
        s.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    Value::Object(s)
}

fn format_schemas(out: &mut Map<String, Value>) {
    out.insert(
        QUANTITY.into(),
        json!({"type": "string", "description": "A fixed-point number with a unit suffix (e.g. 100m, 2Gi)."}),
    );
    out.insert(
        TIME.into(),
        json!({"type": "string", "format": "date-time", "description": "RFC 3339 time, seconds precision."}),
    );
    out.insert(MICROTIME.into(), json!({"type": "string", "format": "date-time", "description": "RFC 3339 time, microsecond precision."}));
    out.insert(INT_OR_STRING.into(), json!({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true, "description": "An integer or a string."}));
}

fn param(name: &str, location: &str, required: bool) -> Value {
    let mut p = Map::new();
    p.insert("name".into(), json!(name));
    p.insert("in".into(), json!(location));
    p.insert("schema".into(), json!({"type": "string", "uniqueItems": true}));
    if required {
        p.insert("required".into(), json!(true));
    }
    Value::Object(p)
}

fn body(schema: &str) -> Value {
    json!({"content": {"application/json": {"schema": ref_to(schema)}}})
}

fn ok_response(schema: &str) -> Value {
    json!({"200": {"description": "OK", "content": {"application/json": {"schema": ref_to(schema)}}}})
}

/// The paths (with operations) for one kind.
fn kind_paths(g: &GroupVersion, kind: &str, plural: &str, namespaced: bool, paths: &mut Map<String, Value>) {
    let base = format!("/{}", g.path);
    let collection = if namespaced {
        format!("{base}/namespaces/{{namespace}}/{plural}")
    } else {
        format!("{base}/{plural}")
    };
    let schema = schema_name_of(kind);
    let list_schema = schema_name_of(&format!("{kind}List"));
    let gvk = json!({"group": g.group, "version": g.version, "kind": kind});
    let op_suffix = format!(
        "{}{}{}",
        if g.group.is_empty() { "Core".to_string() } else { "Coordination".to_string() },
        g.version.to_uppercase().get(..1).unwrap_or("V").to_string() + g.version.get(1..).unwrap_or(""),
        if namespaced { "Namespaced" } else { "" }
    );
    let write_params = || {
        vec![
            param("dryRun", "query", false),
            param("fieldManager", "query", false),
            param("fieldValidation", "query", false),
        ]
    };
    let ns_param = || if namespaced { vec![param("namespace", "path", true)] } else { Vec::new() };

    let list_params: Vec<Value> = [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "watch",
        "timeoutSeconds",
        "allowWatchBookmarks",
    ]
    .iter()
    .map(|p| param(p, "query", false))
    .collect();
    let mut coll = Map::new();
    coll.insert("parameters".into(), Value::Array(ns_param()));
    coll.insert(
        "get".into(),
        json!({
        "operationId": format!("list{op_suffix}{kind}"), "x-kubernetes-action": "list",
        "x-kubernetes-group-version-kind": gvk,
        "parameters": list_params,
        "responses": ok_response(&list_schema)}),
    );
    coll.insert(
        "post".into(),
        json!({
        "operationId": format!("create{op_suffix}{kind}"), "x-kubernetes-action": "post",
        "x-kubernetes-group-version-kind": gvk, "parameters": write_params(),
        "requestBody": body(&schema), "responses": ok_response(&schema)}),
    );
    paths.insert(collection.clone(), Value::Object(coll));

    let mut item = Map::new();
    let mut item_params = vec![param("name", "path", true)];
    item_params.extend(ns_param());
    item.insert("parameters".into(), Value::Array(item_params));
    item.insert(
        "get".into(),
        json!({
        "operationId": format!("read{op_suffix}{kind}"), "x-kubernetes-action": "get",
        "x-kubernetes-group-version-kind": gvk, "responses": ok_response(&schema)}),
    );
    item.insert(
        "put".into(),
        json!({
        "operationId": format!("replace{op_suffix}{kind}"), "x-kubernetes-action": "put",
        "x-kubernetes-group-version-kind": gvk, "parameters": write_params(),
        "requestBody": body(&schema), "responses": ok_response(&schema)}),
    );
    let patch_schema = json!({"schema": ref_to("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")});
    let mut patch_params = write_params();
    patch_params.push(param("force", "query", false));
    item.insert("patch".into(), json!({
        "operationId": format!("patch{op_suffix}{kind}"), "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": gvk, "parameters": patch_params,
        "requestBody": {"content": {
            "application/json-patch+json": patch_schema, "application/merge-patch+json": patch_schema,
            "application/strategic-merge-patch+json": patch_schema, "application/apply-patch+yaml": patch_schema}},
        "responses": ok_response(&schema)}));
    item.insert("delete".into(), json!({
        "operationId": format!("delete{op_suffix}{kind}"), "x-kubernetes-action": "delete",
        "x-kubernetes-group-version-kind": gvk,
        "parameters": [param("gracePeriodSeconds", "query", false), param("propagationPolicy", "query", false), param("dryRun", "query", false)],
        "requestBody": body("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
        "responses": ok_response(&schema)}));
    paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
}

/// The OpenAPI v3 document of a discovery path (`api/v1` or `apis/coordination.k8s.io/v1`, without
/// the leading slash); `None` for any other path.
pub fn openapi_v3(path: &str) -> Option<Value> {
    let g = GROUP_VERSIONS.iter().find(|g| g.path == path.trim_start_matches('/'))?;
    let mut paths = Map::new();
    let mut wanted: Vec<String> = vec!["Status".into(), "DeleteOptions".into(), "Patch".into()];
    for (kind, plural, namespaced) in g.kinds {
        kind_paths(g, kind, plural, *namespaced, &mut paths);
        wanted.push((*kind).to_string());
        wanted.push(format!("{kind}List"));
    }
    // Emit every type reachable from the kinds.
    let mut schemas = Map::new();
    format_schemas(&mut schemas);
    while let Some(name) = wanted.pop() {
        let Some(t) = type_def(&name) else { continue };
        let full = t.schema_name();
        if schemas.contains_key(&full) {
            continue;
        }
        let mut refs = Vec::new();
        schemas.insert(full, type_schema(t, &mut refs));
        wanted.extend(refs);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A stable content hash of a document (FNV-1a 64 over its compact JSON, as 16 upper-case hex digits),
/// used as the `hash` query of the index's `serverRelativeURL` so clients can cache.
pub fn openapi_v3_hash(doc: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in doc.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}}}`.
pub fn openapi_v3_index() -> Value {
    let mut paths = Map::new();
    for p in openapi_v3_paths() {
        if let Some(doc) = openapi_v3(p) {
            let url = format!("/openapi/v3/{p}?hash={}", openapi_v3_hash(&doc));
            paths.insert(p.to_string(), json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// The official v1.32 OpenAPI document `file` from `shared/k8s-openapi` beside the workspace (or the
/// directory in `K8S_OPENAPI_DIR`), for tests that check our output against upstream; `None` (with a
/// note that the check is skipped) when absent.
#[cfg(test)]
pub(crate) fn official(file: &str) -> Option<Value> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::var_os("K8S_OPENAPI_DIR").map(Into::into).into_iter().collect();
    dirs.extend(
        ["../shared", "../../shared", "../../../shared"].iter().map(|d| manifest.join(d).join("k8s-openapi")),
    );
    for dir in &dirs {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            return serde_json::from_str(&text).ok();
        }
    }
    eprintln!("skipping the comparison with the official {file}: not found in {dirs:?}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::k8s_merge_keys;

    #[test]
    fn every_reference_resolves_and_specs_parse() {
        for t in TYPES {
            for (f, s) in t.fields {
                let mut spec = parse_spec(s);
                while let Spec::Map(inner) | Spec::List(inner, _) = spec {
                    spec = *inner;
                }
                if let Spec::Ref(r) = spec {
                    assert!(type_def(r).is_some(), "{}.{f}: unknown type {r}", t.name);
                }
            }
            for r in t.required {
                assert!(t.field(r).is_some(), "{}: required {r} not a field", t.name);
            }
        }
    }

    /// Our table against the official v1.32 schemas: same field names for every described type, the
    /// same required fields, and the same kind of value (scalar / map / list / object) per field.
    #[test]
    fn types_agree_with_official_schemas() {
        let mut schemas = Map::new();
        for f in ["api__v1_openapi.json", "apis__coordination.k8s.io__v1_openapi.json"] {
            let Some(doc) = official(f) else { return };
            schemas.extend(doc["components"]["schemas"].as_object().cloned().unwrap_or_default());
        }
        for t in TYPES.iter().filter(|t| t.name != "Patch") {
            let theirs = &schemas[&t.schema_name()];
            assert!(theirs.is_object(), "{} missing upstream", t.schema_name());
            let mut their_fields: Vec<&str> = theirs["properties"]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let mut ours: Vec<&str> = t.fields.iter().map(|(f, _)| *f).collect();
            their_fields.sort_unstable();
            ours.sort_unstable();
            assert_eq!(ours, their_fields, "fields of {}", t.name);
            let mut their_req: Vec<&str> = theirs["required"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut our_req = t.required.to_vec();
            their_req.sort_unstable();
            our_req.sort_unstable();
            assert_eq!(our_req, their_req, "required of {}", t.name);
            for (f, s) in t.fields {
                let p = &theirs["properties"][f];
                let their_kind = p.get("type").and_then(Value::as_str).unwrap_or("ref");
                let our_kind = match parse_spec(s) {
                    Spec::Scalar("string" | "bytes") => "string",
                    Spec::Scalar("int32" | "int64") => "integer",
                    Spec::Scalar("bool") => "boolean",
                    Spec::Scalar("number") => "number",
                    Spec::Scalar(_) | Spec::Ref(_) => "ref",
                    Spec::Map(_) => "object",
                    Spec::List(..) => "array",
                    Spec::Open => {
                        if their_kind == "object" {
                            "object"
                        } else {
                            "ref"
                        }
                    }
                };
                assert_eq!(our_kind, their_kind, "{}.{f}", t.name);
                if let Spec::Scalar(fmt @ ("int32" | "int64")) = parse_spec(s) {
                    assert_eq!(p["format"], json!(fmt), "{}.{f}", t.name);
                }
                if let (Spec::List(_, key), Some(strategy)) =
                    (parse_spec(s), p.get("x-kubernetes-patch-strategy"))
                {
                    let merge = strategy.as_str().unwrap_or("").split(',').any(|s| s == "merge");
                    let their_key =
                        p.get("x-kubernetes-patch-merge-key").and_then(Value::as_str).unwrap_or("");
                    assert_eq!(key, merge.then_some(their_key), "{}.{f}", t.name);
                } else if let Spec::List(_, key) = parse_spec(s) {
                    assert_eq!(key, None, "{}.{f} is atomic upstream", t.name);
                }
            }
        }
    }

    /// The merge keys in the documents (what kubectl uses for its patches) match what the server applies.
    #[test]
    fn document_merge_keys_match_server_patch_metadata() {
        let doc = openapi_v3("api/v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let keys = k8s_merge_keys("Pod");
        let spec = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(
            spec["containers"]["x-kubernetes-patch-merge-key"],
            json!(keys(&["spec", "containers"]).unwrap())
        );
        assert_eq!(spec["tolerations"]["x-kubernetes-list-type"], json!("atomic"));
        assert_eq!(keys(&["spec", "tolerations"]), None);
        let c = &schemas["io.k8s.api.core.v1.Container"]["properties"];
        assert_eq!(c["ports"]["x-kubernetes-patch-merge-key"], json!("containerPort"));
        assert_eq!(keys(&["spec", "containers", "ports"]), Some("containerPort"));
    }

    #[test]
    fn pod_patch_declares_field_validation_for_kubectl() {
        let doc = openapi_v3("api/v1").unwrap();
        let op = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        let params = op["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(doc["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        let lease = openapi_v3("/apis/coordination.k8s.io/v1").unwrap();
        let op =
            &lease["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], json!("Lease"));
        assert_eq!(
            lease["components"]["schemas"]["io.k8s.api.coordination.v1.Lease"]
                ["x-kubernetes-group-version-kind"],
            json!([{"group": "coordination.k8s.io", "version": "v1", "kind": "Lease"}])
        );
        assert!(openapi_v3("apis/apps/v1").is_none());
    }

    #[test]
    fn secrets_are_described_with_base64_data() {
        let doc = openapi_v3("api/v1").unwrap();
        let secret = &doc["components"]["schemas"]["io.k8s.api.core.v1.Secret"];
        assert_eq!(
            secret["properties"]["data"]["additionalProperties"],
            json!({"type": "string", "format": "byte"})
        );
        assert_eq!(secret["properties"]["stringData"]["additionalProperties"], json!({"type": "string"}));
        let op = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], json!("Secret"));
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.SecretList"].is_object());
    }

    #[test]
    fn every_schema_reference_resolves_in_the_document() {
        for p in openapi_v3_paths() {
            let doc = openapi_v3(p).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let text = doc.to_string();
            let mut rest = text.as_str();
            let mut n = 0;
            while let Some(i) = rest.find("#/components/schemas/") {
                let tail = &rest[i + "#/components/schemas/".len()..];
                let name = &tail[..tail.find('"').unwrap()];
                assert!(schemas.contains_key(name), "{p}: dangling reference {name}");
                rest = tail;
                n += 1;
            }
            assert!(n > 10, "{p}: too few references ({n})");
        }
    }

    #[test]
    fn index_points_at_each_document_with_its_hash() {
        let index = openapi_v3_index();
        let url = index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap();
        let doc = openapi_v3("api/v1").unwrap();
        assert_eq!(url, format!("/openapi/v3/api/v1?hash={}", openapi_v3_hash(&doc)));
        assert!(index["paths"]["apis/coordination.k8s.io/v1"].is_object());
        assert_ne!(
            openapi_v3_hash(&doc),
            openapi_v3_hash(&openapi_v3("apis/coordination.k8s.io/v1").unwrap())
        );
    }
}
