//! DefaultBinder: binds through the API (`pods/binding`).

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

use crate::api::ClusterApi;
use crate::framework::{BindPlugin, Code, Plugin, Status};

/// The plugin's name.
pub const NAME: &str = "DefaultBinder";

/// Binds with a Binding object.
pub struct DefaultBinder {
    /// The API.
    pub api: Arc<dyn ClusterApi>,
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

impl BindPlugin for DefaultBinder {
    fn bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Status> {
        let api = self.api.clone();
        Box::pin(async move {
            match api.bind(&pod, &node).await {
                Ok(()) => Status::success(),
                Err(err) => Status::new(Code::Error, err.to_string()),
            }
        })
    }
}
