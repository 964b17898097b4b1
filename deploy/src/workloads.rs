//! The objects that run the project: the operator's Deployment (controllers and webhook), the
//! webhook's Service and configuration, the serving certificate, the agent's DaemonSet.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ServiceReference, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Toleration, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::{
    AGENT, AGENT_METRICS_PORT, METRICS_PORT, NAMESPACE, OPERATOR, WEBHOOK_CONFIGURATION, WEBHOOK_PORT, WEBHOOK_SECRET,
    WEBHOOK_SERVICE,
};

/// Where the operator's pods find the webhook's serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certificates {
    /// The Secret [`WEBHOOK_SECRET`] (issued by cert-manager, or made by hand), mounted as a
    /// volume: the kubelet updates the files when the Secret changes and the webhook reloads them.
    Secret,
    /// The files OLM mounts into a CSV deployment that serves a webhook, and rotates itself.
    Olm,
}

/// Where [`Certificates::Secret`] is mounted.
const SECRET_MOUNT: &str = "/var/run/evpn-operator/tls";
/// Where OLM mounts the serving pair of a deployment that has webhook definitions.
pub const OLM_CERT_DIR: &str = "/apiserver.local.config/certificates";

/// The user and group the operator runs as: not root, and numeric so `runAsNonRoot` can check it.
pub const NON_ROOT: i64 = 65532;

/// The labels that select one component's pods.
pub fn selector_labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), component.to_owned())])
}

fn labels(component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(component);
    labels.insert("app.kubernetes.io/part-of".into(), OPERATOR.into());
    labels.insert("app.kubernetes.io/version".into(), crate::VERSION.into());
    labels
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
}

fn tcp_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// The operator's Deployment: two replicas, each serving the webhook, one of them (the Lease
/// holder) running the controllers. With `agent_image`, the operator also keeps the agent's
/// DaemonSet applied (the OLM install, where a bundle cannot carry a DaemonSet).
pub fn operator_deployment(certificates: Certificates, agent_image: Option<&str>) -> Deployment {
    let (cert_file, key_file) = match certificates {
        Certificates::Secret => (format!("{SECRET_MOUNT}/tls.crt"), format!("{SECRET_MOUNT}/tls.key")),
        Certificates::Olm => (format!("{OLM_CERT_DIR}/apiserver.crt"), format!("{OLM_CERT_DIR}/apiserver.key")),
    };
    let mut args = vec![
        format!("--webhook-listen=0.0.0.0:{WEBHOOK_PORT}"),
        format!("--metrics-listen=0.0.0.0:{METRICS_PORT}"),
        format!("--tls-cert-file={cert_file}"),
        format!("--tls-key-file={key_file}"),
        // The webhook lets only the operator write EVPNNodeState specs; under OLM the namespace
        // is the user's choice, so the user name is built from it ($(VAR) is expanded by the
        // kubelet from the container's env).
        format!("--operator-user=system:serviceaccount:$(POD_NAMESPACE):{OPERATOR}"),
    ];
    if let Some(image) = agent_image {
        args.push(format!("--agent-image={image}"));
    }
    let (volumes, mounts) = match certificates {
        Certificates::Secret => (
            vec![Volume {
                name: "webhook-tls".into(),
                secret: Some(SecretVolumeSource { secret_name: Some(WEBHOOK_SECRET.into()), ..Default::default() }),
                ..Default::default()
            }],
            vec![VolumeMount {
                name: "webhook-tls".into(),
                mount_path: SECRET_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            }],
        ),
        // OLM adds the volume and the mount itself.
        Certificates::Olm => (Vec::new(), Vec::new()),
    };
    let container = Container {
        name: "operator".into(),
        image: Some(crate::operator_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![tcp_port("webhook", WEBHOOK_PORT), tcp_port("metrics", METRICS_PORT)]),
        // Alive while the process answers; ready (in the webhook Service) only once the webhook
        // serves and its caches have listed, because until then it denies every EVPN and VTEP
        // request. Leadership does not count: the replica that is not leading admits too.
        liveness_probe: Some(Probe { initial_delay_seconds: Some(5), ..http_probe("/healthz", "metrics", 10) }),
        readiness_probe: Some(http_probe("/readyz", "metrics", 5)),
        // Memory: the 1,000 EVPN x 500 node benchmark stays under 200 MB. No CPU limit: throttling
        // the webhook would turn into admission timeouts.
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
            limits: Some(quantities(&[("memory", "512Mi")])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
        ..Default::default()
    };
    Deployment {
        metadata: meta(OPERATOR, Some(NAMESPACE), OPERATOR),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector { match_labels: Some(selector_labels(OPERATOR)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(OPERATOR)), ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(OPERATOR.into()),
                    containers: vec![container],
                    volumes: Some(volumes).filter(|v| !v.is_empty()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NON_ROOT),
                        run_as_group: Some(NON_ROOT),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    // Two replicas on one node would fail together: spread them when possible.
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                                weight: 100,
                                pod_affinity_term: PodAffinityTerm {
                                    label_selector: Some(LabelSelector {
                                        match_labels: Some(selector_labels(OPERATOR)),
                                        ..Default::default()
                                    }),
                                    topology_key: "kubernetes.io/hostname".into(),
                                    ..Default::default()
                                },
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    node_selector: Some(BTreeMap::from([("kubernetes.io/os".into(), "linux".into())])),
                    termination_grace_period_seconds: Some(10),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Keeps one operator replica, and so the webhook, up through voluntary disruptions (drains):
/// with the webhook down, EVPN, VTEP and EVPNNodeState writes are refused.
pub fn operator_disruption_budget() -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(OPERATOR, Some(NAMESPACE), OPERATOR),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(OPERATOR)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service the apiserver calls the webhook through.
pub fn webhook_service() -> Service {
    Service {
        metadata: meta(WEBHOOK_SERVICE, Some(NAMESPACE), OPERATOR),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(OPERATOR)),
            ports: Some(vec![ServicePort {
                name: Some("webhook".into()),
                port: 443,
                target_port: Some(IntOrString::String("webhook".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The cert-manager annotation that fills the configuration's caBundle from the Certificate.
pub const INJECT_CA_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

/// The webhook's ValidatingWebhookConfiguration, reaching it through [`webhook_service`]; the
/// rules are the webhook crate's own.
pub fn webhook_configuration() -> ValidatingWebhookConfiguration {
    let client = WebhookClientConfig {
        service: Some(ServiceReference {
            namespace: NAMESPACE.into(),
            name: WEBHOOK_SERVICE.into(),
            path: None,
            port: Some(443),
        }),
        ..Default::default()
    };
    let mut configuration = evpn_webhook::configuration(WEBHOOK_CONFIGURATION, client, None);
    configuration.metadata.labels = Some(labels(OPERATOR));
    configuration.metadata.annotations =
        Some(BTreeMap::from([(INJECT_CA_ANNOTATION.into(), format!("{NAMESPACE}/{WEBHOOK_SERVICE}"))]));
    configuration
}

/// The DNS names the apiserver uses for the webhook Service.
pub fn webhook_dns_names() -> Vec<String> {
    vec![format!("{WEBHOOK_SERVICE}.{NAMESPACE}.svc"), format!("{WEBHOOK_SERVICE}.{NAMESPACE}.svc.cluster.local")]
}

/// cert-manager's Issuer and Certificate for the webhook: a self-signed serving certificate in
/// [`WEBHOOK_SECRET`], renewed by cert-manager before it expires; the webhook picks the new pair
/// up from the mounted Secret without a restart.
pub fn cert_manager_objects() -> Vec<Value> {
    let issuer = format!("{OPERATOR}-selfsigned");
    vec![
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": {"name": issuer, "namespace": NAMESPACE, "labels": labels(OPERATOR)},
            "spec": {"selfSigned": {}},
        }),
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE, "labels": labels(OPERATOR)},
            "spec": {
                "secretName": WEBHOOK_SECRET,
                "dnsNames": webhook_dns_names(),
                "issuerRef": {"kind": "Issuer", "name": issuer},
                "privateKey": {"rotationPolicy": "Always"},
            },
        }),
    ]
}

/// Why the agent holds each capability it is given (all others are dropped).
pub const AGENT_CAPABILITIES: [(&str, &str); 3] = [
    ("NET_ADMIN", "creates and changes bridges, VXLAN devices, addresses and bridge ports over netlink"),
    (
        "SYS_ADMIN",
        "enters network namespaces (setns) for the netns VRF backend, which --vrf-backend=auto falls back to on kernels without VRF devices",
    ),
    (
        "DAC_OVERRIDE",
        "reaches the node FRR's vtysh sockets and state directory, owned by FRR's user and group whose ids differ between distributions",
    ),
];

/// The agent's DaemonSet in `namespace`: one agent per node, in the node's network namespace,
/// driving the node's own FRR through its sockets.
pub fn agent_daemonset(namespace: &str, image: &str) -> DaemonSet {
    let host_dir = |name: &str, path: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some("DirectoryOrCreate".into()) }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let container = Container {
        name: "agent".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![env_from_field("NODE_NAME", "spec.nodeName")]),
        args: Some(vec![format!("--metrics-listen=0.0.0.0:{AGENT_METRICS_PORT}")]),
        ports: Some(vec![tcp_port("metrics", AGENT_METRICS_PORT)]),
        // Restarting a stuck agent loses no packets (devices and FRR stay as they are); readiness
        // (watches listed, first reconcile done) paces a rolling update node by node.
        liveness_probe: Some(Probe { initial_delay_seconds: Some(5), ..http_probe("/healthz", "metrics", 10) }),
        readiness_probe: Some(http_probe("/readyz", "metrics", 5)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
            limits: Some(quantities(&[("memory", "256Mi")])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            // Root, so that the capabilities below are effective (Kubernetes grants no ambient
            // capabilities to other users); everything else about root is taken away.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(AGENT_CAPABILITIES.iter().map(|(c, _)| (*c).to_owned()).collect()),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            // Network namespaces made after the agent started must show up in it too.
            VolumeMount { mount_propagation: Some("HostToContainer".into()), ..mount("netns", "/run/netns", true) },
            mount("frr-run", "/var/run/frr", false),
            mount("frr-config", "/etc/frr", true),
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    DaemonSet {
        metadata: meta(AGENT, Some(namespace), AGENT),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector_labels(AGENT)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(AGENT)), ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT.into()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    // The node's data plane: evicted last, scheduled on every node, tainted or not.
                    priority_class_name: Some("system-node-critical".into()),
                    tolerations: Some(vec![Toleration { operator: Some("Exists".into()), ..Default::default() }]),
                    node_selector: Some(BTreeMap::from([("kubernetes.io/os".into(), "linux".into())])),
                    containers: vec![container],
                    volumes: Some(vec![
                        host_dir("netns", "/run/netns"),
                        host_dir("frr-run", "/var/run/frr"),
                        host_dir("frr-config", "/etc/frr"),
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
