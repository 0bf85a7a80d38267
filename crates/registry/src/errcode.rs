//! The error codes of the distribution spec and the HTTP status each is sent with.
//!
//! Errors of the core and of auth name their code here; the HTTP layer turns it into the
//! spec's body, `{"errors":[{"code":..,"message":..,"detail":..}]}`.

/// One error code of the OCI distribution spec (plus the few Docker's registry adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob unknown to the repository.
    BlobUnknown,
    /// Upload session unknown (never started, finished or cancelled).
    BlobUploadUnknown,
    /// Upload data invalid, e.g. a chunk out of order.
    BlobUploadInvalid,
    /// Provided digest did not match the content, or is malformed.
    DigestInvalid,
    /// A blob a manifest references is not in the repository.
    ManifestBlobUnknown,
    /// Manifest malformed or inconsistent.
    ManifestInvalid,
    /// Manifest (tag or digest) unknown to the repository.
    ManifestUnknown,
    /// Repository name malformed.
    NameInvalid,
    /// Repository not known to the registry.
    NameUnknown,
    /// Content length or size does not match.
    SizeInvalid,
    /// Tag malformed.
    TagInvalid,
    /// Authentication required or failed.
    Unauthorized,
    /// Authenticated, but access to the resource is denied.
    Denied,
    /// The operation or media type is unsupported.
    Unsupported,
    /// A byte range cannot be satisfied (Docker's registry's `RANGE_INVALID`).
    RangeInvalid,
    /// The `n` pagination parameter is not a number (Docker's registry's code).
    PaginationNumberInvalid,
    /// An internal failure (storage); not the client's fault.
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::TagInvalid => "TAG_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => 404,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid
            | Self::TagInvalid
            | Self::PaginationNumberInvalid => 400,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 415,
            Self::RangeInvalid => 416,
            Self::Unknown => 500,
        }
    }
}
