//! NodeResourcesBalancedAllocation: prefer nodes where cpu and memory would be used in
//! similar fractions (score = (1 - standard deviation of the fractions) * 100).

use k8s_openapi::api::core::v1::Pod;

use super::node_resources_fit::scoring_pairs;
use crate::framework::{CycleState, NodeInfo, Plugin, ScorePlugin, Status, MAX_NODE_SCORE};

/// The plugin's name.
pub const NAME: &str = "NodeResourcesBalancedAllocation";

/// Scores balance of cpu and memory use.
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let fractions: Vec<f64> = scoring_pairs(pod, node)
            .iter()
            .filter(|(_, alloc)| *alloc > 0)
            .map(|(req, alloc)| (*req as f64 / *alloc as f64).min(1.0))
            .collect();
        if fractions.len() < 2 {
            return Ok(MAX_NODE_SCORE);
        }
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        let variance =
            fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / fractions.len() as f64;
        Ok(((1.0 - variance.sqrt()) * MAX_NODE_SCORE as f64) as i64)
    }
}
