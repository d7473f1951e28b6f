//! `${VAR}` expansion, so tokens live in the environment, not in the file.

/// Why a value could not be expanded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExpandError {
    #[error("environment variable {0} is not set (it is referenced as ${{{0}}})")]
    Missing(String),
    #[error("unterminated ${{ (write ${{NAME}}, or $$ for a literal $)")]
    Unterminated,
    #[error(
        "${{{name}}} is not allowed here: webhooks from the registry table may only use variables whose name starts with {prefix} ([registry] env_prefix)"
    )]
    NotAllowed { name: String, prefix: String },
}

/// Replaces each `${NAME}` with the variable's value; `$$` is a literal `$`.
/// A lone `$` not followed by `{` is kept as is.
pub(crate) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    substitute(text, &|name| {
        env(name).ok_or_else(|| ExpandError::Missing(name.to_owned()))
    })
}

/// [`expand`], but only variables whose name starts with `prefix` may be
/// named: text from an untrusted place (a registry row) can then never read
/// the sidecar's other variables, such as the database password.
pub(crate) fn expand_prefixed(
    text: &str,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    substitute(text, &|name| {
        // `LEADHOOK_SECTION__KEY` variables are the sidecar's own config
        // (the database URL among them), whatever the prefix says.
        let config_key = name.starts_with("LEADHOOK_") && name.contains("__");
        if !name.starts_with(prefix) || config_key {
            return Err(ExpandError::NotAllowed {
                name: name.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        env(name).ok_or_else(|| ExpandError::Missing(name.to_owned()))
    })
}

fn substitute(
    text: &str,
    value: &dyn Fn(&str) -> Result<String, ExpandError>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ExpandError::Unterminated)?;
            let name = &tail[..end];
            out.push_str(&value(name)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cr$t".to_owned())
    }

    #[test]
    fn variables_are_replaced_and_text_around_them_kept() {
        assert_eq!(expand("Bearer ${TOKEN}!", &env).unwrap(), "Bearer s3cr$t!");
        assert_eq!(expand("no variables", &env).unwrap(), "no variables");
    }

    #[test]
    fn double_dollar_and_lone_dollar_stay_literal() {
        assert_eq!(expand("a$$b $5", &env).unwrap(), "a$b $5");
    }

    #[test]
    fn a_missing_variable_is_named_in_the_error() {
        let err = expand("${NOPE}", &env).unwrap_err();
        assert_eq!(err, ExpandError::Missing("NOPE".into()));
        assert!(err.to_string().contains("NOPE is not set"));
    }

    #[test]
    fn a_prefixed_expansion_refuses_variables_outside_the_prefix() {
        let env = |name: &str| Some(format!("value of {name}"));
        let err =
            expand_prefixed("${LEADHOOK_DATABASE__URL}", "LEADHOOK_WEBHOOK_", &env).unwrap_err();
        assert!(matches!(err, ExpandError::NotAllowed { .. }));
        assert!(err.to_string().contains("LEADHOOK_WEBHOOK_"));
        assert_eq!(
            expand_prefixed("Bearer ${LEADHOOK_WEBHOOK_T}", "LEADHOOK_WEBHOOK_", &env).unwrap(),
            "Bearer value of LEADHOOK_WEBHOOK_T"
        );
        let wide = expand_prefixed("${LEADHOOK_DATABASE__URL}", "LEADHOOK_", &env);
        assert!(
            matches!(wide, Err(ExpandError::NotAllowed { .. })),
            "config variables stay out of reach even under a wide prefix"
        );
    }

    #[test]
    fn an_unterminated_reference_is_an_error() {
        assert_eq!(
            expand("${TOKEN", &env).unwrap_err(),
            ExpandError::Unterminated
        );
    }
}
