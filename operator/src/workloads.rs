//! What a ComplaintSaga asks for, computed without any I/O: for each of the four services a
//! ConfigMap (its settings), a Deployment (`sagaflow serve <service>`) and a Service, owned by the
//! ComplaintSaga so that deleting it removes them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecretKeySelector, SecurityContext, Service as KService,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::SecretRef;
use crate::crd::pipeline::EventPipelineSpec;
use crate::crd::saga::{ComplaintSagaSpec, Service};
use crate::desired;

/// The annotation on the pod template that changes with the ConfigMap, so that a settings change
/// rolls the pods.
pub const CONFIG_HASH: &str = "sagaflow.dev/config-hash";

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The name `sagaflow serve` takes.
    pub name: &'static str,
    /// The name of its queues' suffix (`<exchange>.<consumer>`), when it reads queues.
    pub consumer: Option<&'static str>,
    pub port: u16,
    pub database: bool,
    pub mongodb: bool,
    pub smtp: bool,
}

pub const SERVICES: [Kind; 4] = [
    Kind {
        name: "complaint",
        consumer: Some("complaint-service"),
        port: 3005,
        database: true,
        mongodb: false,
        smtp: false,
    },
    Kind {
        name: "notification",
        consumer: Some("notification-service"),
        port: 3006,
        database: true,
        mongodb: false,
        smtp: true,
    },
    Kind {
        name: "audit",
        consumer: Some("audit-service"),
        port: 3007,
        database: true,
        mongodb: false,
        smtp: false,
    },
    Kind {
        name: "event-store",
        consumer: None,
        port: 3008,
        database: false,
        mongodb: true,
        smtp: false,
    },
];

/// The objects of one service.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: Kind,
    pub config: ConfigMap,
    pub deployment: Deployment,
    pub service: KService,
}

/// The name of a service's objects: `<saga>-<service>`.
pub fn object_name(saga: &str, service: &str) -> String {
    format!("{saga}-{service}")
}

fn settings<'a>(spec: &'a ComplaintSagaSpec, kind: &Kind) -> &'a Service {
    match kind.name {
        "complaint" => &spec.services.complaint,
        "notification" => &spec.services.notification,
        "audit" => &spec.services.audit,
        _ => &spec.services.event_store,
    }
}

/// The labels of a service's objects; the first two select its pods.
pub fn labels(saga: &str, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), saga.to_owned()),
        ("app.kubernetes.io/component".into(), service.to_owned()),
        ("app.kubernetes.io/name".into(), "sagaflow".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "sagaflow-operator".into(),
        ),
    ])
}

fn selector(saga: &str, service: &str) -> BTreeMap<String, String> {
    labels(saga, service).into_iter().take(2).collect()
}

/// Settings the operator decides: the port the probes and the Service use, where the console
/// reaches the other services, that the
/// EventPipeline owns the topology, the stream keys it created, the data volume, and the URLs
/// that come from the Secrets (an `env` entry would be shadowed by them anyway).
const RESERVED: [&str; 12] = [
    "PORT",
    "NOTIFICATION_SERVICE_URL",
    "AUDIT_SERVICE_URL",
    "EVENT_STORE_SERVICE_URL",
    "TOPOLOGY",
    "STREAM_PREFIX",
    "SAGAFLOW_DATA_DIR",
    "DATABASE_URL",
    "RABBITMQ_URL",
    "REDIS_URL",
    "MONGODB_URL",
    "SMTP_URL",
];

/// The settings a service reads from its ConfigMap.
pub fn config_data(
    spec: &ComplaintSagaSpec,
    pipeline: &EventPipelineSpec,
    kind: &Kind,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        ("PORT".to_owned(), kind.port.to_string()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        // The EventPipeline declares the topology; the services do not re-declare it.
        ("TOPOLOGY".to_owned(), "external".to_owned()),
        (
            "SAGAFLOW_DATA_DIR".to_owned(),
            "/var/lib/sagaflow".to_owned(),
        ),
    ]);
    if kind.name == "complaint" {
        for (name, value) in [
            ("DEADLINE_CRITICAL", &spec.deadlines.critical),
            ("DEADLINE_HIGH", &spec.deadlines.high),
            ("DEADLINE_MEDIUM", &spec.deadlines.medium),
            ("DEADLINE_LOW", &spec.deadlines.low),
        ] {
            data.insert(name.to_owned(), value.clone());
        }
    }
    if let Some(retry) = kind
        .consumer
        .and_then(|c| desired::retry_of(pipeline).get(c).cloned())
    {
        data.insert("RETRY_MAX_ATTEMPTS".into(), retry.max_attempts.to_string());
        data.insert(
            "RETRY_BASE_DELAY".into(),
            format!("{}s", retry.base_delay_seconds),
        );
        data.insert(
            "RETRY_MAX_DELAY".into(),
            format!("{}s", retry.max_delay_seconds),
        );
    }
    if let Some(max) = desired::stream_max_len(pipeline) {
        data.insert("STREAM_MAX_LEN".into(), max.to_string());
    }
    // The user's settings, except the reserved ones: the saga's for every service first, then
    // the service's own.
    for (k, v) in spec.env.iter().chain(&settings(spec, kind).env) {
        if !RESERVED.contains(&k.as_str()) {
            data.insert(k.clone(), v.clone());
        }
    }
    data
}

/// Where the complaint service's console reaches the other services: their Services, in the
/// saga's namespace.
pub fn peer_urls(saga: &str) -> BTreeMap<String, String> {
    SERVICES
        .iter()
        .filter_map(|k| {
            let var = match k.name {
                "notification" => "NOTIFICATION_SERVICE_URL",
                "audit" => "AUDIT_SERVICE_URL",
                "event-store" => "EVENT_STORE_SERVICE_URL",
                _ => return None,
            };
            Some((
                var.to_owned(),
                format!("http://{}:{}", object_name(saga, k.name), k.port),
            ))
        })
        .collect()
}

/// A stable hash of the settings (FNV-1a), for the pod template's annotation.
pub fn hash(data: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in data {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn secret_env(name: &str, secret: &SecretRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The four services' objects for the ComplaintSaga `saga`.
pub fn workloads(
    saga: &str,
    namespace: &str,
    owner: &OwnerReference,
    spec: &ComplaintSagaSpec,
    pipeline: &EventPipelineSpec,
) -> Vec<Workload> {
    SERVICES
        .iter()
        .map(|kind| {
            let name = object_name(saga, kind.name);
            let meta = ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels(saga, kind.name)),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            };
            let mut data = config_data(spec, pipeline, kind);
            if kind.name == "complaint" {
                data.extend(peer_urls(saga));
            }
            let config_hash = hash(&data);
            let config = ConfigMap {
                metadata: meta.clone(),
                data: Some(data),
                ..Default::default()
            };
            let mut env = vec![
                secret_env("RABBITMQ_URL", &pipeline.rabbitmq),
                secret_env("REDIS_URL", &pipeline.redis),
            ];
            if kind.database {
                env.push(secret_env("DATABASE_URL", &spec.database));
            }
            if kind.mongodb {
                env.push(secret_env("MONGODB_URL", &spec.mongodb));
            }
            if kind.smtp {
                env.push(secret_env("SMTP_URL", &spec.smtp));
            }
            if kind.name == "event-store" {
                // Each replica its own name in the stream's consumer group.
                env.push(EnvVar {
                    name: "CONSUMER_NAME".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            let mut pod_labels = labels(saga, kind.name);
            pod_labels.insert("sagaflow.dev/scrape".into(), "true".into());
            let container = Container {
                name: "sagaflow".into(),
                image: Some(spec.image.clone()),
                args: Some(vec!["serve".into(), kind.name.into()]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: i32::from(kind.port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                env: Some(env),
                env_from: Some(vec![EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]),
                liveness_probe: Some(probe("/health/live", 10, 3)),
                readiness_probe: Some(probe("/health/ready", 5, 2)),
                resources: settings(spec, kind).resources.clone(),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![VolumeMount {
                    name: "data".into(),
                    mount_path: "/var/lib/sagaflow".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            };
            let deployment = Deployment {
                metadata: meta.clone(),
                spec: Some(DeploymentSpec {
                    replicas: Some(settings(spec, kind).replicas),
                    selector: LabelSelector {
                        match_labels: Some(selector(saga, kind.name)),
                        ..Default::default()
                    },
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            annotations: Some(BTreeMap::from([
                                (CONFIG_HASH.to_owned(), config_hash),
                                ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                                ("prometheus.io/port".to_owned(), kind.port.to_string()),
                                ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                            ])),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            containers: vec![container],
                            image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                                .then(|| spec.image_pull_secrets.clone()),
                            security_context: Some(PodSecurityContext {
                                run_as_non_root: Some(true),
                                run_as_user: Some(65532),
                                ..Default::default()
                            }),
                            volumes: Some(vec![Volume {
                                name: "data".into(),
                                empty_dir: Some(EmptyDirVolumeSource::default()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            };
            let service = KService {
                metadata: meta,
                spec: Some(ServiceSpec {
                    selector: Some(selector(saga, kind.name)),
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: i32::from(kind.port),
                        target_port: Some(IntOrString::String("http".into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Workload {
                kind: *kind,
                config,
                deployment,
                service,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> EventPipelineSpec {
        let s = serde_json::json!({"name": "rabbit"});
        serde_json::from_value(
            serde_json::json!({"rabbitmq": s, "redis": {"name": "redis", "key": "uri"}}),
        )
        .expect("a pipeline")
    }

    fn saga() -> ComplaintSagaSpec {
        serde_json::from_value(serde_json::json!({
            "pipeline": "p", "image": "sagaflow:1",
            "database": {"name": "pg"}, "mongodb": {"name": "mongo"}, "smtp": {"name": "mail"},
            "services": {"notification": {"replicas": 3, "env": {"NOTIFY_ADMIN_EMAIL": "ops@example.com"}}}
        }))
        .expect("a saga")
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "sagaflow.dev/v1alpha1".into(),
            kind: "ComplaintSaga".into(),
            name: "demo".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn env_names(w: &Workload) -> Vec<(String, String)> {
        let c = &w
            .deployment
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0];
        c.env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| {
                let from = e.value_from.as_ref().expect("from a secret or the pod");
                match (&from.secret_key_ref, &from.field_ref) {
                    (Some(r), _) => (e.name.clone(), format!("{}/{}", r.name, r.key)),
                    (None, Some(f)) => (e.name.clone(), format!("pod:{}", f.field_path)),
                    _ => panic!("{} comes from neither", e.name),
                }
            })
            .collect()
    }

    #[test]
    fn each_service_gets_exactly_the_secrets_it_needs() {
        let all = workloads("demo", "ns", &owner(), &saga(), &pipeline());
        let names: Vec<String> = all
            .iter()
            .map(|w| w.deployment.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(
            names,
            [
                "demo-complaint",
                "demo-notification",
                "demo-audit",
                "demo-event-store"
            ]
        );
        assert_eq!(
            env_names(&all[1]),
            [
                ("RABBITMQ_URL".into(), "rabbit/url".into()),
                ("REDIS_URL".into(), "redis/uri".into()),
                ("DATABASE_URL".into(), "pg/url".into()),
                ("SMTP_URL".into(), "mail/url".into()),
            ]
        );
        assert_eq!(
            env_names(&all[3]),
            [
                ("RABBITMQ_URL".into(), "rabbit/url".into()),
                ("REDIS_URL".into(), "redis/uri".into()),
                ("MONGODB_URL".into(), "mongo/url".into()),
                ("CONSUMER_NAME".into(), "pod:metadata.name".into()),
            ]
        );
        for w in &all {
            assert_eq!(
                w.deployment
                    .metadata
                    .owner_references
                    .as_ref()
                    .expect("owned")[0]
                    .name,
                "demo"
            );
            let pod = w
                .deployment
                .spec
                .as_ref()
                .expect("spec")
                .template
                .spec
                .as_ref()
                .expect("pod");
            assert_eq!(
                pod.containers[0].args.as_ref().expect("args"),
                &["serve".to_owned(), w.kind.name.to_owned()]
            );
        }
    }

    #[test]
    fn the_image_pull_secrets_reach_every_pod_and_none_means_none() {
        let pull = |spec: &ComplaintSagaSpec| -> Vec<Option<Vec<String>>> {
            workloads("demo", "ns", &owner(), spec, &pipeline())
                .iter()
                .map(|w| {
                    let pod = w.deployment.spec.as_ref()?.template.spec.as_ref()?;
                    Some(
                        pod.image_pull_secrets
                            .as_ref()?
                            .iter()
                            .map(|r| r.name.clone())
                            .collect(),
                    )
                })
                .collect()
        };
        assert_eq!(pull(&saga()), vec![None; 4]);
        let mut spec = saga();
        spec.image_pull_secrets =
            serde_json::from_value(serde_json::json!([{"name": "registry"}])).expect("references");
        assert_eq!(pull(&spec), vec![Some(vec!["registry".to_owned()]); 4]);
    }

    #[test]
    fn the_sagas_settings_reach_every_service_and_a_services_own_win() {
        let mut spec = saga();
        spec.env = BTreeMap::from([
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "http://collector:4318".into(),
            ),
            ("NOTIFY_ADMIN_EMAIL".into(), "all@example.com".into()),
            ("PORT".into(), "9999".into()),
            ("DATABASE_URL".into(), "postgres://elsewhere/db".into()),
        ]);
        let all = workloads("demo", "ns", &owner(), &spec, &pipeline());
        for w in &all {
            let data = w.config.data.as_ref().expect("data");
            assert_eq!(data["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://collector:4318");
            assert_ne!(data["PORT"], "9999", "the operator decides the port");
            assert!(
                !data.contains_key("DATABASE_URL"),
                "URLs come from the Secrets"
            );
        }
        assert_eq!(
            all[1].config.data.as_ref().expect("data")["NOTIFY_ADMIN_EMAIL"],
            "ops@example.com",
            "the notification service's own setting wins"
        );
        assert_eq!(
            all[2].config.data.as_ref().expect("data")["NOTIFY_ADMIN_EMAIL"],
            "all@example.com"
        );
    }

    #[test]
    fn the_complaint_service_is_told_where_the_other_services_answer() {
        let all = workloads("demo", "ns", &owner(), &saga(), &pipeline());
        let complaint = all[0].config.data.as_ref().expect("data");
        assert_eq!(
            complaint["NOTIFICATION_SERVICE_URL"],
            "http://demo-notification:3006"
        );
        assert_eq!(complaint["AUDIT_SERVICE_URL"], "http://demo-audit:3007");
        assert_eq!(
            complaint["EVENT_STORE_SERVICE_URL"],
            "http://demo-event-store:3008"
        );
        for w in &all[1..] {
            let name = w.service.metadata.name.clone().expect("name");
            let url = format!("http://{name}:{}", w.kind.port);
            assert!(complaint.values().any(|v| *v == url), "no {url}");
            let data = w.config.data.as_ref().expect("data");
            assert!(!data.contains_key("AUDIT_SERVICE_URL"), "{name}");
        }
    }

    #[test]
    fn settings_go_into_the_config_map_and_its_hash_into_the_pods() {
        let all = workloads("demo", "ns", &owner(), &saga(), &pipeline());
        let notification = &all[1];
        assert_eq!(
            notification
                .deployment
                .spec
                .as_ref()
                .expect("spec")
                .replicas,
            Some(3)
        );
        let data = notification.config.data.as_ref().expect("data");
        assert_eq!(data["NOTIFY_ADMIN_EMAIL"], "ops@example.com");
        assert_eq!(data["RETRY_MAX_ATTEMPTS"], "5");
        assert_eq!(data["PORT"], "3006");
        assert!(
            !data.contains_key("DEADLINE_HIGH"),
            "deadlines are the complaint service's"
        );
        assert_eq!(
            all[0].config.data.as_ref().expect("data")["DEADLINE_CRITICAL"],
            "15m"
        );
        assert!(
            !all[3]
                .config
                .data
                .as_ref()
                .expect("data")
                .contains_key("RETRY_MAX_ATTEMPTS")
        );

        let mut other = pipeline();
        for q in &mut other.queues {
            q.retry.max_attempts = 7;
        }
        let changed = workloads("demo", "ns", &owner(), &saga(), &other);
        let annotation = |w: &Workload| {
            w.deployment
                .spec
                .as_ref()
                .expect("spec")
                .template
                .metadata
                .as_ref()
                .expect("meta")
                .annotations
                .as_ref()
                .expect("annotations")[CONFIG_HASH]
                .clone()
        };
        assert_ne!(
            annotation(&changed[1]),
            annotation(&all[1]),
            "a retry change rolls the pods"
        );
        assert_eq!(
            annotation(&changed[3]),
            annotation(&all[3]),
            "the event store reads no queue"
        );
    }
}
