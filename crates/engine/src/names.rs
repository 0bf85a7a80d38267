//! Container names: validation and Docker-style generated names.

use rand::seq::SliceRandom;

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "daring", "eager",
    "fair", "fast", "fond", "gentle", "happy", "hardy", "keen", "kind", "lively", "lucid", "merry",
    "mighty", "nimble", "noble", "patient", "proud", "quick", "quiet", "rapid", "ready", "serene",
    "sharp", "silent", "steady", "stoic", "sunny", "swift", "tidy", "vivid", "warm", "wise",
    "witty", "zealous",
];

/// Seafaring words, for a project called skiff.
const NOUNS: &[&str] = &[
    "anchor",
    "bay",
    "beacon",
    "buoy",
    "cape",
    "compass",
    "coral",
    "cove",
    "current",
    "delta",
    "dinghy",
    "dock",
    "dune",
    "ferry",
    "fjord",
    "gull",
    "harbor",
    "helm",
    "island",
    "jetty",
    "keel",
    "kelp",
    "lagoon",
    "lantern",
    "mast",
    "marlin",
    "oar",
    "orca",
    "pier",
    "pilot",
    "port",
    "reef",
    "rudder",
    "sail",
    "schooner",
    "shoal",
    "skipper",
    "sloop",
    "starboard",
    "tide",
    "wake",
    "wharf",
];

/// A random `adjective_noun` name.
pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"quick"),
        NOUNS.choose(&mut rng).unwrap_or(&"skiff")
    )
}

/// Checks a user-given name against Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() >= 2 {
        Ok(())
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..50 {
            validate(&generate()).unwrap();
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(validate("web-1").is_ok());
        assert!(validate("-web").is_err());
        assert!(validate("we b").is_err());
        assert!(validate("a").is_err());
        assert!(validate("/abs").is_err());
    }
}
