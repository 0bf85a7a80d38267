//! The referrers API: manifests whose `subject` names a given manifest, recorded when they
//! are pushed, listed as an OCI index.

use skiff_images::Digest;

use super::manifests::ReferrerDescriptor;
use super::{CoreError, Registry};
use crate::name::RepoName;

/// The answer to `GET /v2/<name>/referrers/<digest>`.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// The referrers' descriptors, as JSON values of an index's `manifests`.
    pub manifests: Vec<serde_json::Value>,
    /// True when an `artifactType` filter was applied (`OCI-Filters-Applied`).
    pub filtered: bool,
}

impl Registry {
    /// The referrers of `subject` in `repo`, optionally only those of `artifact_type`.
    ///
    /// An unknown subject has no referrers (the spec: 200 with an empty index).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, CoreError> {
        let mut found: Vec<ReferrerDescriptor> = self
            .storage
            .referrers(repo, subject)
            .await?
            .iter()
            .filter_map(|raw| serde_json::from_slice(raw).ok())
            .filter(|d: &ReferrerDescriptor| {
                artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
            })
            .collect();
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(Referrers {
            manifests: found
                .iter()
                .map(|d| serde_json::to_value(d).expect("descriptors serialise"))
                .collect(),
            filtered: artifact_type.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_images::manifest::media_type;

    use super::*;
    use crate::name::ManifestRef;
    use crate::storage::memory::MemStorage;

    #[tokio::test]
    async fn referrers_are_recorded_filtered_and_forgotten() {
        let r = Registry::new(Arc::new(MemStorage::default()));
        let repo: RepoName = "app".parse().unwrap();
        let empty = r
            .upload_monolithic(&repo, &Digest::of(b"{}").to_string(), &mut &b"{}"[..])
            .await
            .unwrap();
        // The subject need not exist yet.
        let subject = Digest::of(b"the image");
        let artifact = |kind: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{subject}","size":9}},"annotations":{{"k":"v"}}}}"#,
                media_type::OCI_MANIFEST,
                media_type::OCI_MANIFEST
            )
        };
        let mut pushed = Vec::new();
        for kind in ["application/sig", "application/sbom"] {
            let bytes = artifact(kind).into_bytes();
            let p = r
                .put_manifest(
                    &repo,
                    &ManifestRef::Digest(Digest::of(&bytes)),
                    None,
                    &bytes,
                )
                .await
                .unwrap();
            assert_eq!(p.subject.as_ref(), Some(&subject));
            pushed.push(p.digest);
        }
        let all = r.referrers(&repo, &subject, None).await.unwrap();
        assert_eq!(all.manifests.len(), 2);
        assert!(!all.filtered);
        let sigs = r
            .referrers(&repo, &subject, Some("application/sig"))
            .await
            .unwrap();
        assert_eq!(sigs.manifests.len(), 1);
        assert_eq!(sigs.manifests[0]["digest"], pushed[0].to_string());
        assert_eq!(sigs.manifests[0]["annotations"]["k"], "v");
        assert!(sigs.filtered);

        r.delete_manifest(&repo, &ManifestRef::Digest(pushed[0].clone()))
            .await
            .unwrap();
        assert_eq!(
            r.referrers(&repo, &subject, None)
                .await
                .unwrap()
                .manifests
                .len(),
            1
        );
    }
}
