//! The kubelet's image manager: `imagePullPolicy` decides whether a container's image is
//! pulled; a failed pull backs off per pod and image (10 s doubling to 5 min, as the
//! kubelet's `flowcontrol.Backoff`), during which the container waits with
//! `ImagePullBackOff` instead of pulling again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;

use crate::cri::{AuthConfig, ImageService};
use crate::events::EventType;
use crate::status::Waiting;

/// The first back-off after a failed pull.
pub const INITIAL_PULL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off between pulls.
pub const MAX_PULL_BACKOFF: Duration = Duration::from_secs(300);

/// What the puller reports as events of the pod: (type, reason, message).
pub type PullEvent = (EventType, &'static str, String);

/// A failed pull's back-off.
#[derive(Debug, Clone)]
struct BackOff {
    /// When the last pull failed.
    failed_at: Instant,
    /// How long from then no pull is tried.
    delay: Duration,
    /// Why it failed.
    error: String,
}

/// Pull decisions and back-offs of one node's pods.
#[derive(Debug, Default)]
pub struct ImagePuller {
    backoffs: Mutex<HashMap<(String, String), BackOff>>,
}

/// The pull policy of `c`: its `imagePullPolicy`, else `Always` for `:latest` (or no
/// tag) and `IfNotPresent` otherwise, as API defaulting sets it.
pub fn pull_policy(c: &Container) -> String {
    let image = c.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    let latest = (!last.contains(':') && !image.contains('@')) || last.ends_with(":latest");
    c.image_pull_policy
        .clone()
        .unwrap_or_else(|| if latest { "Always" } else { "IfNotPresent" }.into())
}

impl ImagePuller {
    /// Makes `c`'s image present as its pull policy wants, pulling with each of
    /// `credentials()` in turn (anonymously when there are none); the error is how the
    /// container waits. `events` receives what the kubelet would record.
    pub fn ensure_image(
        &self,
        rt: &dyn ImageService,
        pod_uid: &str,
        c: &Container,
        credentials: &dyn Fn() -> Vec<AuthConfig>,
        now: Instant,
        events: &mut Vec<PullEvent>,
    ) -> Result<(), Waiting> {
        let image = c.image.clone().unwrap_or_default();
        let policy = pull_policy(c);
        let present = rt.image_status(&image).ok().flatten().is_some();
        match policy.as_str() {
            "Never" if !present => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                events.push((EventType::Warning, "ErrImageNeverPull", message.clone()));
                return Err(Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message,
                });
            }
            "Never" | "IfNotPresent" if present => {
                events.push((
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ));
                return Ok(());
            }
            _ => {}
        }
        let key = (pod_uid.to_string(), image.clone());
        if let Some(b) = self.backoffs.lock().unwrap().get(&key) {
            if now.saturating_duration_since(b.failed_at) < b.delay {
                events.push((
                    EventType::Normal,
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                ));
                return Err(Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!(
                        "Back-off pulling image \"{image}\": ErrImagePull: {}",
                        b.error
                    ),
                });
            }
        }
        events.push((
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        ));
        let started = Instant::now();
        let creds = credentials();
        let result = if creds.is_empty() {
            rt.pull_image(&image, None)
        } else {
            let mut last = None;
            for auth in &creds {
                match rt.pull_image(&image, Some(auth)) {
                    Ok(id) => {
                        last = Some(Ok(id));
                        break;
                    }
                    Err(e) => last = Some(Err(e)),
                }
            }
            last.expect("at least one credential")
        };
        match result {
            Ok(_) => {
                self.backoffs.lock().unwrap().remove(&key);
                events.push((
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                ));
                Ok(())
            }
            Err(e) => {
                let error = e.to_string();
                let mut backoffs = self.backoffs.lock().unwrap();
                let delay = match backoffs.get(&key) {
                    // A back-off long expired starts over, as flowcontrol.Backoff does.
                    Some(b)
                        if now.saturating_duration_since(b.failed_at) <= 2 * MAX_PULL_BACKOFF =>
                    {
                        (b.delay * 2).min(MAX_PULL_BACKOFF)
                    }
                    _ => INITIAL_PULL_BACKOFF,
                };
                backoffs.insert(
                    key,
                    BackOff {
                        failed_at: now,
                        delay,
                        error: error.clone(),
                    },
                );
                events.push((
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {error}"),
                ));
                events.push((EventType::Warning, "Failed", "Error: ErrImagePull".into()));
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message: error,
                })
            }
        }
    }

    /// Forgets the back-offs of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.backoffs
            .lock()
            .unwrap()
            .retain(|(uid, _), _| uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "app".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        }
    }

    fn secret() -> AuthConfig {
        AuthConfig {
            username: "alice".into(),
            password: "pw".into(),
        }
    }

    #[test]
    fn policies_default_from_the_tag() {
        assert_eq!(pull_policy(&container("busybox", None)), "Always");
        assert_eq!(pull_policy(&container("busybox:latest", None)), "Always");
        assert_eq!(
            pull_policy(&container("localhost:5000/app", None)),
            "Always"
        );
        assert_eq!(
            pull_policy(&container("localhost:5000/app:1", None)),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&container("busybox", Some("Never"))), "Never");
    }

    #[test]
    fn never_if_not_present_and_always() {
        let rt = FakeRuntime::with_images(&["here:1"]);
        let p = ImagePuller::default();
        let now = Instant::now();
        let mut ev = Vec::new();
        let none = || Vec::new();
        let w = p
            .ensure_image(
                &rt,
                "u",
                &container("gone:1", Some("Never")),
                &none,
                now,
                &mut ev,
            )
            .unwrap_err();
        assert_eq!(w.reason, "ErrImageNeverPull");
        assert_eq!(
            w.message,
            "Container image \"gone:1\" is not present with pull policy of Never"
        );
        p.ensure_image(
            &rt,
            "u",
            &container("here:1", Some("IfNotPresent")),
            &none,
            now,
            &mut ev,
        )
        .unwrap();
        assert!(rt.calls().is_empty(), "present images are not pulled");
        // As the kubelet says it: an event for each container the image is used for.
        assert_eq!(
            ev.last().map(|(t, r, m)| (*t, *r, m.as_str())),
            Some((
                EventType::Normal,
                "Pulled",
                "Container image \"here:1\" already present on machine"
            ))
        );
        rt.put_registry_image("here:1", None);
        p.ensure_image(
            &rt,
            "u",
            &container("here:1", Some("Always")),
            &none,
            now,
            &mut ev,
        )
        .unwrap();
        assert_eq!(
            rt.calls(),
            vec!["pull_image here:1 as anonymous".to_string()]
        );
    }

    #[test]
    fn a_failed_pull_backs_off_then_credentials_work() {
        let rt = FakeRuntime::default();
        rt.put_registry_image("r:5000/app:1", Some(secret()));
        let p = ImagePuller::default();
        let c = container("r:5000/app:1", None);
        let t0 = Instant::now();
        let mut ev = Vec::new();
        let none = || Vec::new();
        let w = p
            .ensure_image(&rt, "u", &c, &none, t0, &mut ev)
            .unwrap_err();
        assert_eq!(w.reason, "ErrImagePull");
        assert!(w.message.contains("401 Unauthorized"), "{}", w.message);
        let w = p
            .ensure_image(&rt, "u", &c, &none, t0 + Duration::from_secs(5), &mut ev)
            .unwrap_err();
        assert_eq!(w.reason, "ImagePullBackOff");
        assert!(w
            .message
            .starts_with("Back-off pulling image \"r:5000/app:1\""));
        assert!(w.message.contains("401 Unauthorized"), "{}", w.message);
        assert_eq!(rt.calls().len(), 1, "no pull during the back-off");
        // The second failure doubles the back-off.
        let t1 = t0 + Duration::from_secs(11);
        p.ensure_image(&rt, "u", &c, &none, t1, &mut ev)
            .unwrap_err();
        let w = p
            .ensure_image(&rt, "u", &c, &none, t1 + Duration::from_secs(15), &mut ev)
            .unwrap_err();
        assert_eq!(w.reason, "ImagePullBackOff");
        // With the secret's credentials (tried after a wrong one) the pull succeeds.
        let wrong = AuthConfig {
            username: "mallory".into(),
            password: "x".into(),
        };
        let creds = || vec![wrong.clone(), secret()];
        p.ensure_image(&rt, "u", &c, &creds, t1 + Duration::from_secs(21), &mut ev)
            .unwrap();
        assert_eq!(
            rt.calls()[2..],
            [
                "pull_image r:5000/app:1 as mallory".to_string(),
                "pull_image r:5000/app:1 as alice".to_string()
            ]
        );
        assert!(ev.iter().any(|(_, r, _)| *r == "Pulled"));
    }
}
