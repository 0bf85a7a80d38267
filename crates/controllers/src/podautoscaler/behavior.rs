//! From the metrics' recommendation to the replicas the controller sets
//! (`normalizeDesiredReplicas` and `normalizeDesiredReplicasWithBehaviors`):
//! stabilization over the recent recommendations (scale-down: the highest of the window,
//! 300s by default; scale-up: the lowest, 0s by default), then the rate limits (the
//! `spec.behavior` policies: Pods or Percent per `periodSeconds`, the most or least
//! permissive by `selectPolicy`; without a behavior, at most double or 4), then
//! `minReplicas`/`maxReplicas`. Each step reports the condition Kubernetes reports.
//!
//! The history (recommendations and past scale events) is the controller's memory of one
//! HPA, as in Kubernetes it does not survive a restart. Times are seconds.

/// A scaling policy: at most `value` pods or percent per `period` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `type: Pods`.
    Pods {
        /// Pods.
        value: i32,
        /// Seconds.
        period: i64,
    },
    /// `type: Percent`.
    Percent {
        /// Percent of the replicas at the period's start.
        value: i32,
        /// Seconds.
        period: i64,
    },
}

impl Policy {
    fn period(&self) -> i64 {
        match self {
            Policy::Pods { period, .. } | Policy::Percent { period, .. } => *period,
        }
    }
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One direction's rules (`HPAScalingRules`), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization_window: i64,
    /// `selectPolicy`.
    pub select: Select,
    /// `policies`.
    pub policies: Vec<Policy>,
}

impl Rules {
    /// Kubernetes' scale-up default: 0s window, the larger of 4 pods or 100% per 15s.
    pub fn default_scale_up() -> Rules {
        Rules {
            stabilization_window: 0,
            select: Select::Max,
            policies: vec![
                Policy::Pods {
                    value: 4,
                    period: 15,
                },
                Policy::Percent {
                    value: 100,
                    period: 15,
                },
            ],
        }
    }

    /// Kubernetes' scale-down default: `window` (the controller's
    /// `--horizontal-pod-autoscaler-downscale-stabilization`), 100% per 15s.
    pub fn default_scale_down(window: i64) -> Rules {
        Rules {
            stabilization_window: window,
            select: Select::Max,
            policies: vec![Policy::Percent {
                value: 100,
                period: 15,
            }],
        }
    }
}

/// How replicas may change: `spec.behavior`, or Kubernetes' rules without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// No `spec.behavior`: scale-down stabilized over this window, scale-up limited to
    /// `max(2 * current, 4)`.
    Legacy {
        /// Seconds.
        downscale_window: i64,
    },
    /// `spec.behavior`, defaults filled in.
    Rules {
        /// `scaleUp`.
        up: Rules,
        /// `scaleDown`.
        down: Rules,
    },
}

/// A condition to report: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `AbleToScale`, `ScalingLimited`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// The reason.
    pub reason: &'static str,
    /// The message.
    pub message: &'static str,
}

/// What one HPA's controller remembers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Recommendations: (time, replicas).
    recommendations: Vec<(i64, i32)>,
    /// Scale-ups: (time, replicas added).
    ups: Vec<(i64, i32)>,
    /// Scale-downs: (time, replicas removed).
    downs: Vec<(i64, i32)>,
}

impl History {
    /// Records that the controller changed the scale from `from` to `to` at `now`.
    pub fn record_scale(&mut self, now: i64, from: i32, to: i32) {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => self.ups.push((now, to - from)),
            std::cmp::Ordering::Less => self.downs.push((now, from - to)),
            std::cmp::Ordering::Equal => {}
        }
        // Events older than any period a policy may name are no longer needed.
        let horizon = now - 1800;
        self.ups.retain(|(t, _)| *t > horizon);
        self.downs.retain(|(t, _)| *t > horizon);
    }

    fn changed_within(events: &[(i64, i32)], now: i64, period: i64) -> i32 {
        events
            .iter()
            .filter(|(t, _)| *t > now - period)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The decision after normalization, with the conditions to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Replicas to set.
    pub replicas: i32,
    /// `AbleToScale` (stabilization).
    pub able_to_scale: Condition,
    /// `ScalingLimited` (rate and bounds).
    pub scaling_limited: Condition,
}

const STABILIZED_DOWN: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const STABILIZED_UP: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const IN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);

fn condition(
    type_: &'static str,
    status: bool,
    (reason, message): (&'static str, &'static str),
) -> Condition {
    Condition {
        type_,
        status,
        reason,
        message,
    }
}

/// The replicas one direction's policies allow, from the replicas at the period's start.
fn limit(rules: &Rules, history: &History, current: i32, now: i64, up: bool) -> i32 {
    if rules.select == Select::Disabled || rules.policies.is_empty() {
        return current;
    }
    let proposals = rules.policies.iter().map(|policy| {
        let period = policy.period();
        let added = History::changed_within(&history.ups, now, period);
        let removed = History::changed_within(&history.downs, now, period);
        let start = current - added + removed;
        match (policy, up) {
            (Policy::Pods { value, .. }, true) => start + value,
            (Policy::Pods { value, .. }, false) => start - value,
            (Policy::Percent { value, .. }, true) => {
                (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32
            }
            (Policy::Percent { value, .. }, false) => {
                (f64::from(start) * (1.0 - f64::from(*value) / 100.0)) as i32
            }
        }
    });
    // Max picks the policy allowing the biggest change: the highest limit up, the lowest
    // limit down.
    match (rules.select, up) {
        (Select::Max, true) | (Select::Min, false) => proposals.max().unwrap_or(current),
        _ => proposals.min().unwrap_or(current),
    }
}

/// Applies stabilization, rate limits and bounds to the metrics' `desired` replicas
/// (already computed for `current` replicas), remembering the recommendation.
pub fn normalize(
    behavior: &Behavior,
    history: &mut History,
    current: i32,
    desired: i32,
    (min, max): (i32, i32),
    now: i64,
) -> Normalized {
    let (up_window, down_window) = match behavior {
        Behavior::Legacy { downscale_window } => (0, *downscale_window),
        Behavior::Rules { up, down } => (up.stabilization_window, down.stabilization_window),
    };
    // Stabilization: the lowest recommendation of the up window and the highest of the
    // down window bound the change from the current replicas.
    let (mut up_bound, mut down_bound) = (desired, desired);
    for (t, r) in &history.recommendations {
        if *t > now - up_window {
            up_bound = up_bound.min(*r);
        }
        if *t > now - down_window {
            down_bound = down_bound.max(*r);
        }
    }
    let stabilized = current.max(up_bound).min(down_bound);
    let keep = up_window.max(down_window);
    history.recommendations.retain(|(t, _)| *t > now - keep);
    history.recommendations.push((now, desired));
    let able_to_scale = condition(
        "AbleToScale",
        true,
        match stabilized.cmp(&desired) {
            std::cmp::Ordering::Greater => STABILIZED_DOWN,
            std::cmp::Ordering::Less => STABILIZED_UP,
            std::cmp::Ordering::Equal => READY,
        },
    );

    let (replicas, why) = match behavior {
        Behavior::Legacy { .. } => {
            let up_limit = (2 * current).max(4);
            let (maximum, too_many) = if max > up_limit {
                (up_limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if stabilized < min {
                (min, TOO_FEW)
            } else if stabilized > maximum {
                (maximum, too_many)
            } else {
                (stabilized, IN_RANGE)
            }
        }
        Behavior::Rules { up, down } => {
            if stabilized > current {
                let up_limit = limit(up, history, current, now, true).max(current);
                let (maximum, why) = if max > up_limit {
                    (up_limit, UP_LIMIT)
                } else {
                    (max, TOO_MANY)
                };
                if stabilized > maximum {
                    (maximum, why)
                } else {
                    (stabilized, IN_RANGE)
                }
            } else if stabilized < current {
                let down_limit = limit(down, history, current, now, false).min(current);
                let (minimum, why) = if min < down_limit {
                    (down_limit, DOWN_LIMIT)
                } else {
                    (min, TOO_FEW)
                };
                if stabilized < minimum {
                    (minimum, why)
                } else {
                    (stabilized, IN_RANGE)
                }
            } else {
                (stabilized, IN_RANGE)
            }
        }
    };
    Normalized {
        replicas,
        able_to_scale,
        scaling_limited: condition("ScalingLimited", replicas != stabilized, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy() -> Behavior {
        Behavior::Legacy {
            downscale_window: 300,
        }
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_the_window() {
        let mut h = History::default();
        let n = normalize(&legacy(), &mut h, 5, 5, (1, 10), 1000);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.able_to_scale.reason, "ReadyForNewScale");
        // The load dropped: 2 would do, but 5 was recommended 100s ago.
        let n = normalize(&legacy(), &mut h, 5, 2, (1, 10), 1100);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.able_to_scale.reason, "ScaleDownStabilized");
        // Once the window has passed, the highest remaining recommendation wins.
        let n = normalize(&legacy(), &mut h, 5, 2, (1, 10), 1301);
        assert_eq!(n.replicas, 2);
        assert!(!n.scaling_limited.status);
        assert_eq!(n.scaling_limited.reason, "DesiredWithinRange");
    }

    #[test]
    fn scale_up_is_immediate_by_default_but_bounded() {
        let mut h = History::default();
        // Up at most max(2 * current, 4) without a behavior.
        let n = normalize(&legacy(), &mut h, 1, 9, (1, 10), 1000);
        assert_eq!(n.replicas, 4);
        assert!(n.scaling_limited.status);
        assert_eq!(n.scaling_limited.reason, "ScaleUpLimit");
        // maxReplicas below that limit: TooManyReplicas.
        let n = normalize(&legacy(), &mut h, 4, 9, (1, 5), 1001);
        assert_eq!(
            (n.replicas, n.scaling_limited.reason),
            (5, "TooManyReplicas")
        );
        // Below minReplicas.
        let mut h = History::default();
        let n = normalize(&legacy(), &mut h, 2, 1, (2, 5), 1000);
        assert_eq!(
            (n.replicas, n.scaling_limited.reason),
            (2, "TooFewReplicas")
        );
    }

    fn rules(up: Rules, down: Rules) -> Behavior {
        Behavior::Rules { up, down }
    }

    #[test]
    fn policies_limit_the_rate_per_period() {
        let up = Rules {
            stabilization_window: 0,
            select: Select::Max,
            policies: vec![
                Policy::Pods {
                    value: 2,
                    period: 60,
                },
                Policy::Percent {
                    value: 50,
                    period: 60,
                },
            ],
        };
        let b = rules(up.clone(), Rules::default_scale_down(0));
        let mut h = History::default();
        // From 4: +2 pods or +50% (6): Max picks 6.
        let n = normalize(&b, &mut h, 4, 20, (1, 100), 1000);
        assert_eq!((n.replicas, n.scaling_limited.reason), (6, "ScaleUpLimit"));
        h.record_scale(1000, 4, 6);
        // 30s later, still in the period that started at 4 replicas: no more room.
        let n = normalize(&b, &mut h, 6, 20, (1, 100), 1030);
        assert_eq!(n.replicas, 6);
        // After the period: from 6, +50% = 9.
        let n = normalize(&b, &mut h, 6, 20, (1, 100), 1061);
        assert_eq!(n.replicas, 9);
        // Min picks the smaller change: +2.
        let b = rules(
            Rules {
                select: Select::Min,
                ..up
            },
            Rules::default_scale_down(0),
        );
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 4, 20, (1, 100), 1000).replicas, 6);
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 10, 20, (1, 100), 1000).replicas, 12);
    }

    #[test]
    fn scale_down_policies_and_disabled_directions() {
        let down = Rules {
            stabilization_window: 0,
            select: Select::Max,
            policies: vec![Policy::Pods {
                value: 1,
                period: 60,
            }],
        };
        let b = rules(Rules::default_scale_up(), down.clone());
        let mut h = History::default();
        let n = normalize(&b, &mut h, 5, 1, (1, 10), 1000);
        assert_eq!(
            (n.replicas, n.scaling_limited.reason),
            (4, "ScaleDownLimit")
        );
        // Disabled: no scale down at all.
        let b = rules(
            Rules::default_scale_up(),
            Rules {
                select: Select::Disabled,
                ..down
            },
        );
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 5, 1, (1, 10), 1000).replicas, 5);
        // Default scale-up: max(4 pods, 100%) per 15s.
        let b = rules(Rules::default_scale_up(), Rules::default_scale_down(0));
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 1, 50, (1, 100), 1000).replicas, 5);
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 10, 50, (1, 100), 1000).replicas, 20);
    }

    #[test]
    fn scale_up_stabilization_takes_the_lowest_recommendation() {
        let up = Rules {
            stabilization_window: 60,
            ..Rules::default_scale_up()
        };
        let b = rules(up, Rules::default_scale_down(0));
        let mut h = History::default();
        assert_eq!(normalize(&b, &mut h, 2, 2, (1, 10), 1000).replicas, 2);
        let n = normalize(&b, &mut h, 2, 6, (1, 10), 1010);
        assert_eq!(
            (n.replicas, n.able_to_scale.reason),
            (2, "ScaleUpStabilized")
        );
        // The low recommendation has left the window.
        assert_eq!(normalize(&b, &mut h, 2, 6, (1, 10), 1061).replicas, 6);
    }
}
