//! The served kinds: the registry table and each kind's strategy (defaulting, validation,
//! printer columns), following the behaviour of Kubernetes' `pkg/registry/*/strategy.go`,
//! `pkg/apis/*/v1/defaults.go` and `pkg/printers/internalversion`.

pub(crate) mod admission_policy;
mod batch;
pub mod certificates;
mod config;
mod conversion;
mod event;
pub mod flowcontrol;
mod namespace;
mod networking;
mod node;
mod pod;
mod policy;
pub mod printers;
pub(crate) use pod::qos_class;
mod rbac_kinds;
mod runtime_class;
pub mod service;
mod storage;
mod workloads;

use k8s_openapi::api::admissionregistration::v1 as admission;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::authorization::v1 as authz;
use k8s_openapi::api::autoscaling::v1 as autoscaling_v1;
use k8s_openapi::api::autoscaling::v2 as autoscaling_v2;
use k8s_openapi::api::batch::v1 as batch_v1;
use k8s_openapi::api::certificates::v1 as certificates_v1;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::events::v1 as events_v1;
use k8s_openapi::api::flowcontrol::v1 as flowcontrol_v1;
use k8s_openapi::api::networking::v1 as networking_v1;
use k8s_openapi::api::node::v1 as node_v1;
use k8s_openapi::api::policy::v1 as policy_v1;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::api::scheduling::v1 as scheduling;
use k8s_openapi::api::storage::v1 as storage_v1;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as crd;
use k8s_pb::api::admissionregistration::v1 as pb_admission;
use k8s_pb::api::apps::v1 as pb_apps;
use k8s_pb::api::authentication::v1 as pb_authn;
use k8s_pb::api::authorization::v1 as pb_authz;
use k8s_pb::api::autoscaling::v1 as pb_autoscaling_v1;
use k8s_pb::api::autoscaling::v2 as pb_autoscaling_v2;
use k8s_pb::api::batch::v1 as pb_batch;
use k8s_pb::api::certificates::v1 as pb_certificates;
use k8s_pb::api::coordination::v1 as pb_coordination;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::api::discovery::v1 as pb_discovery;
use k8s_pb::api::events::v1 as pb_events;
use k8s_pb::api::flowcontrol::v1 as pb_flowcontrol;
use k8s_pb::api::networking::v1 as pb_networking;
use k8s_pb::api::node::v1 as pb_node;
use k8s_pb::api::policy::v1 as pb_policy;
use k8s_pb::api::rbac::v1 as pb_rbac;
use k8s_pb::api::scheduling::v1 as pb_scheduling;
use k8s_pb::api::storage::v1 as pb_storage;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as pb_crd;
use serde_json::{json, Map, Value};

use crate::registry::{row, Registry, ResourceDef, CREATE_ONLY};
use crate::validation::{self, FieldError};

pub use namespace::INITIAL_NAMESPACES;
pub use policy::SYSTEM_PRIORITY_CLASSES;

/// Every resource skiff serves, group by group in discovery order.
pub static RESOURCES: &[ResourceDef] = &[
    // core/v1
    row::<core::Namespace, pb_core::Namespace>("", "v1", "Namespace", ("namespaces", "namespace"))
        .cluster()
        .short(&["ns"])
        .status_only()
        .returns_object()
        .fields(&["status.phase"])
        .strategy(&namespace::NamespaceStrategy),
    row::<core::Pod, pb_core::Pod>("", "v1", "Pod", ("pods", "pod"))
        .short(&["po"])
        .in_all()
        .status()
        .returns_object()
        .fields(&[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ])
        .strategy(&pod::PodStrategy),
    row::<core::Service, pb_core::Service>("", "v1", "Service", ("services", "service"))
        .short(&["svc"])
        .in_all()
        .status_only()
        .returns_object()
        .prefix("services/specs")
        .strategy(&service::ServiceStrategy),
    row::<core::Endpoints, pb_core::Endpoints>("", "v1", "Endpoints", ("endpoints", "endpoints"))
        .short(&["ep"])
        .prefix("services/endpoints")
        .strategy(&service::EndpointsStrategy),
    row::<core::ConfigMap, pb_core::ConfigMap>("", "v1", "ConfigMap", ("configmaps", "configmap"))
        .short(&["cm"])
        .strategy(&config::ConfigMapStrategy),
    row::<core::Secret, pb_core::Secret>("", "v1", "Secret", ("secrets", "secret"))
        .fields(&["type"])
        .strategy(&config::SecretStrategy),
    row::<core::ServiceAccount, pb_core::ServiceAccount>(
        "",
        "v1",
        "ServiceAccount",
        ("serviceaccounts", "serviceaccount"),
    )
    .short(&["sa"])
    .returns_object()
    .strategy(&config::ServiceAccountStrategy),
    row::<core::Node, pb_core::Node>("", "v1", "Node", ("nodes", "node"))
        .cluster()
        .short(&["no"])
        .status_only()
        .prefix("minions")
        .fields(&["spec.unschedulable"])
        .strategy(&node::NodeStrategy),
    row::<core::Event, pb_core::Event>("", "v1", "Event", ("events", "event"))
        .short(&["ev"])
        .fields(&[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ])
        .strategy(&event::EventStrategy),
    row::<core::PersistentVolume, pb_core::PersistentVolume>(
        "",
        "v1",
        "PersistentVolume",
        ("persistentvolumes", "persistentvolume"),
    )
    .cluster()
    .short(&["pv"])
    .status_only()
    .returns_object()
    .strategy(&storage::PersistentVolumeStrategy),
    row::<core::PersistentVolumeClaim, pb_core::PersistentVolumeClaim>(
        "",
        "v1",
        "PersistentVolumeClaim",
        ("persistentvolumeclaims", "persistentvolumeclaim"),
    )
    .short(&["pvc"])
    .status_only()
    .returns_object()
    .strategy(&storage::PersistentVolumeClaimStrategy),
    row::<core::LimitRange, pb_core::LimitRange>(
        "",
        "v1",
        "LimitRange",
        ("limitranges", "limitrange"),
    )
    .short(&["limits"])
    .strategy(&printers::CREATED_AT),
    row::<core::ResourceQuota, pb_core::ResourceQuota>(
        "",
        "v1",
        "ResourceQuota",
        ("resourcequotas", "resourcequota"),
    )
    .short(&["quota"])
    .status_only()
    .returns_object()
    .strategy(&policy::ResourceQuotaStrategy),
    row::<core::ReplicationController, pb_core::ReplicationController>(
        "",
        "v1",
        "ReplicationController",
        ("replicationcontrollers", "replicationcontroller"),
    )
    .short(&["rc"])
    .in_all()
    .status()
    .scale()
    .prefix("controllers")
    .strategy(&workloads::ReplicationControllerStrategy),
    row::<core::PodTemplate, pb_core::PodTemplate>(
        "",
        "v1",
        "PodTemplate",
        ("podtemplates", "podtemplate"),
    ),
    // apps/v1
    row::<apps::Deployment, pb_apps::Deployment>(
        "apps",
        "v1",
        "Deployment",
        ("deployments", "deployment"),
    )
    .short(&["deploy"])
    .in_all()
    .status()
    .scale()
    .strategy(&workloads::DeploymentStrategy),
    row::<apps::ReplicaSet, pb_apps::ReplicaSet>(
        "apps",
        "v1",
        "ReplicaSet",
        ("replicasets", "replicaset"),
    )
    .short(&["rs"])
    .in_all()
    .status()
    .scale()
    .fields(&["status.replicas"])
    .strategy(&workloads::ReplicaSetStrategy),
    row::<apps::StatefulSet, pb_apps::StatefulSet>(
        "apps",
        "v1",
        "StatefulSet",
        ("statefulsets", "statefulset"),
    )
    .short(&["sts"])
    .in_all()
    .status()
    .scale()
    .strategy(&workloads::StatefulSetStrategy),
    row::<apps::DaemonSet, pb_apps::DaemonSet>(
        "apps",
        "v1",
        "DaemonSet",
        ("daemonsets", "daemonset"),
    )
    .short(&["ds"])
    .in_all()
    .status()
    .strategy(&workloads::DaemonSetStrategy),
    row::<apps::ControllerRevision, pb_apps::ControllerRevision>(
        "apps",
        "v1",
        "ControllerRevision",
        ("controllerrevisions", "controllerrevision"),
    )
    .strategy(&workloads::ControllerRevisionStrategy),
    // batch/v1
    row::<batch_v1::Job, pb_batch::Job>("batch", "v1", "Job", ("jobs", "job"))
        .in_all()
        .status()
        .strategy(&batch::JobStrategy),
    row::<batch_v1::CronJob, pb_batch::CronJob>("batch", "v1", "CronJob", ("cronjobs", "cronjob"))
        .short(&["cj"])
        .in_all()
        .status()
        .strategy(&batch::CronJobStrategy),
    // certificates.k8s.io/v1
    row::<certificates_v1::CertificateSigningRequest, pb_certificates::CertificateSigningRequest>(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        ("certificatesigningrequests", "certificatesigningrequest"),
    )
    .cluster()
    .short(&["csr"])
    .status()
    .strategy(&certificates::CsrStrategy),
    // autoscaling/v1 and v2: one resource, stored once, served in both versions.
    row::<autoscaling_v2::HorizontalPodAutoscaler, pb_autoscaling_v2::HorizontalPodAutoscaler>(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        ("horizontalpodautoscalers", "horizontalpodautoscaler"),
    )
    .short(&["hpa"])
    .in_all()
    .status_only()
    .strategy(&policy::HpaStrategy),
    row::<autoscaling_v1::HorizontalPodAutoscaler, pb_autoscaling_v1::HorizontalPodAutoscaler>(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        ("horizontalpodautoscalers", "horizontalpodautoscaler"),
    )
    .short(&["hpa"])
    .in_all()
    .status_only()
    .convert(&conversion::HPA_V1)
    .strategy(&policy::HpaStrategy),
    // networking.k8s.io/v1
    row::<networking_v1::Ingress, pb_networking::Ingress>(
        "networking.k8s.io",
        "v1",
        "Ingress",
        ("ingresses", "ingress"),
    )
    .short(&["ing"])
    .status()
    .strategy(&networking::IngressStrategy),
    row::<networking_v1::IngressClass, pb_networking::IngressClass>(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        ("ingressclasses", "ingressclass"),
    )
    .cluster()
    .strategy(&networking::IngressClassStrategy),
    row::<networking_v1::NetworkPolicy, pb_networking::NetworkPolicy>(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        ("networkpolicies", "networkpolicy"),
    )
    .short(&["netpol"])
    .strategy(&networking::NetworkPolicyStrategy),
    // policy/v1
    row::<policy_v1::PodDisruptionBudget, pb_policy::PodDisruptionBudget>(
        "policy",
        "v1",
        "PodDisruptionBudget",
        ("poddisruptionbudgets", "poddisruptionbudget"),
    )
    .short(&["pdb"])
    .status()
    .strategy(&policy::PdbStrategy),
    // rbac.authorization.k8s.io/v1
    row::<rbac::ClusterRole, pb_rbac::ClusterRole>(
        RBAC,
        "v1",
        "ClusterRole",
        ("clusterroles", "clusterrole"),
    )
    .cluster()
    .strategy(&rbac_kinds::RoleStrategy),
    row::<rbac::ClusterRoleBinding, pb_rbac::ClusterRoleBinding>(
        RBAC,
        "v1",
        "ClusterRoleBinding",
        ("clusterrolebindings", "clusterrolebinding"),
    )
    .cluster()
    .strategy(&rbac_kinds::BindingStrategy),
    row::<rbac::Role, pb_rbac::Role>(RBAC, "v1", "Role", ("roles", "role"))
        .strategy(&rbac_kinds::RoleStrategy),
    row::<rbac::RoleBinding, pb_rbac::RoleBinding>(
        RBAC,
        "v1",
        "RoleBinding",
        ("rolebindings", "rolebinding"),
    )
    .strategy(&rbac_kinds::BindingStrategy),
    // authorization.k8s.io/v1 and authentication.k8s.io/v1: answered, never stored.
    row::<authz::SelfSubjectAccessReview, pb_authz::SelfSubjectAccessReview>(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        ("selfsubjectaccessreviews", "selfsubjectaccessreview"),
    )
    .cluster()
    .verbs(CREATE_ONLY),
    row::<authz::SelfSubjectRulesReview, pb_authz::SelfSubjectRulesReview>(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        ("selfsubjectrulesreviews", "selfsubjectrulesreview"),
    )
    .cluster()
    .verbs(CREATE_ONLY),
    row::<authz::SubjectAccessReview, pb_authz::SubjectAccessReview>(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        ("subjectaccessreviews", "subjectaccessreview"),
    )
    .cluster()
    .verbs(CREATE_ONLY),
    row::<authz::LocalSubjectAccessReview, pb_authz::LocalSubjectAccessReview>(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        ("localsubjectaccessreviews", "localsubjectaccessreview"),
    )
    .verbs(CREATE_ONLY),
    row::<authn::TokenReview, pb_authn::TokenReview>(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        ("tokenreviews", "tokenreview"),
    )
    .cluster()
    .verbs(CREATE_ONLY),
    row::<authn::SelfSubjectReview, pb_authn::SelfSubjectReview>(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        ("selfsubjectreviews", "selfsubjectreview"),
    )
    .cluster()
    .verbs(CREATE_ONLY),
    // storage.k8s.io/v1
    row::<storage_v1::StorageClass, pb_storage::StorageClass>(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        ("storageclasses", "storageclass"),
    )
    .cluster()
    .short(&["sc"])
    .strategy(&storage::StorageClassStrategy),
    row::<storage_v1::VolumeAttachment, pb_storage::VolumeAttachment>(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        ("volumeattachments", "volumeattachment"),
    )
    .cluster()
    .status_only()
    .strategy(&storage::VOLUME_ATTACHMENT),
    row::<storage_v1::CSIDriver, pb_storage::CSIDriver>(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        ("csidrivers", "csidriver"),
    )
    .cluster()
    .strategy(&storage::CsiDriverStrategy),
    row::<storage_v1::CSINode, pb_storage::CSINode>(
        "storage.k8s.io",
        "v1",
        "CSINode",
        ("csinodes", "csinode"),
    )
    .cluster()
    .strategy(&storage::CSI_NODE),
    row::<storage_v1::CSIStorageCapacity, pb_storage::CSIStorageCapacity>(
        "storage.k8s.io",
        "v1",
        "CSIStorageCapacity",
        ("csistoragecapacities", "csistoragecapacity"),
    ),
    // coordination.k8s.io/v1
    row::<coordination::Lease, pb_coordination::Lease>(
        "coordination.k8s.io",
        "v1",
        "Lease",
        ("leases", "lease"),
    )
    .strategy(&networking::LeaseStrategy),
    // discovery.k8s.io/v1
    row::<discovery::EndpointSlice, pb_discovery::EndpointSlice>(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        ("endpointslices", "endpointslice"),
    )
    .strategy(&networking::EndpointSliceStrategy),
    // events.k8s.io/v1: the core events, seen through the newer API.
    row::<events_v1::Event, pb_events::Event>("events.k8s.io", "v1", "Event", ("events", "event"))
        .short(&["ev"])
        .fields(&[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ])
        .convert(&conversion::EVENTS_V1)
        .strategy(&event::EventV1Strategy),
    // scheduling.k8s.io/v1
    row::<scheduling::PriorityClass, pb_scheduling::PriorityClass>(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        ("priorityclasses", "priorityclass"),
    )
    .cluster()
    .short(&["pc"])
    .strategy(&policy::PriorityClassStrategy),
    // admissionregistration.k8s.io/v1
    row::<admission::MutatingWebhookConfiguration, pb_admission::MutatingWebhookConfiguration>(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        (
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
        ),
    )
    .cluster()
    .strategy(&policy::WebhookConfigurationStrategy),
    row::<admission::ValidatingWebhookConfiguration, pb_admission::ValidatingWebhookConfiguration>(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        (
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
        ),
    )
    .cluster()
    .strategy(&policy::WebhookConfigurationStrategy),
    row::<admission::ValidatingAdmissionPolicy, pb_admission::ValidatingAdmissionPolicy>(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        ("validatingadmissionpolicies", "validatingadmissionpolicy"),
    )
    .cluster()
    .status()
    .strategy(&admission_policy::PolicyStrategy),
    row::<
        admission::ValidatingAdmissionPolicyBinding,
        pb_admission::ValidatingAdmissionPolicyBinding,
    >(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        (
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
        ),
    )
    .cluster()
    .strategy(&admission_policy::BindingStrategy),
    // node.k8s.io/v1
    row::<node_v1::RuntimeClass, pb_node::RuntimeClass>(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        ("runtimeclasses", "runtimeclass"),
    )
    .cluster()
    .strategy(&runtime_class::RuntimeClassStrategy),
    // flowcontrol.apiserver.k8s.io/v1
    row::<flowcontrol_v1::FlowSchema, pb_flowcontrol::FlowSchema>(
        flowcontrol::GROUP,
        "v1",
        "FlowSchema",
        ("flowschemas", "flowschema"),
    )
    .cluster()
    .status()
    .strategy(&flowcontrol::FlowSchemaStrategy),
    row::<flowcontrol_v1::PriorityLevelConfiguration, pb_flowcontrol::PriorityLevelConfiguration>(
        flowcontrol::GROUP,
        "v1",
        "PriorityLevelConfiguration",
        ("prioritylevelconfigurations", "prioritylevelconfiguration"),
    )
    .cluster()
    .status()
    .strategy(&flowcontrol::PriorityLevelStrategy),
    // apiextensions.k8s.io/v1
    row::<crd::CustomResourceDefinition, pb_crd::CustomResourceDefinition>(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        ("customresourcedefinitions", "customresourcedefinition"),
    )
    .cluster()
    .short(&["crd", "crds"])
    .status()
    .prefix("apiextensions.k8s.io/customresourcedefinitions")
    .strategy(&crate::crd::CrdStrategy),
];

/// The API group of RBAC.
pub const RBAC: &str = "rbac.authorization.k8s.io";

/// The registry of [`RESOURCES`].
pub static REGISTRY: Registry = Registry::new(RESOURCES);

/// The string at a JSON pointer, or "".
pub(crate) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, or 0.
pub(crate) fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at a JSON pointer, or an empty slice.
pub(crate) fn array_at<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object under `key` of `obj`, created when absent (or not an object).
pub(crate) fn object_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// Sets `key` to `value` unless already present (and not null).
pub(crate) fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// `<none>` for empty strings, as kubectl prints them.
pub(crate) fn or_none(s: impl Into<String>) -> Value {
    let s = s.into();
    json!(if s.is_empty() { "<none>".to_owned() } else { s })
}

/// A label selector (`matchLabels` and `matchExpressions`) as kubectl prints it.
pub(crate) fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(expr, "/key");
        let values: Vec<&str> = array_at(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    parts.join(",")
}

/// Comma-separated container names and images of a pod spec, for `-o wide`.
pub(crate) fn containers_and_images(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Validates the keys of a ConfigMap's or Secret's `data`/`binaryData`.
pub(crate) fn validate_data_keys(obj: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = obj.get(field).and_then(Value::as_object) {
        for key in map.keys() {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
            if !ok {
                errs.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    json!(key),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
    errs
}

/// Validates labels (qualified-name keys, label values) at `field`.
pub(crate) fn validate_labels(labels: Option<&Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = labels.and_then(Value::as_object) {
        for (key, value) in map {
            errs.extend(validation::errors_for(
                field,
                key,
                validation::qualified_name(key),
            ));
            let value = value.as_str().unwrap_or("");
            errs.extend(validation::errors_for(
                field,
                value,
                validation::label_value(value),
            ));
        }
    }
    errs
}
