//! The kubectl shell's input line: split into words without any shell, then checked against
//! what a kubectl running on Warden's own host may be asked to do.
//!
//! The tokenizer knows single quotes, double quotes and backslash escapes, nothing else: no
//! variables, globs, pipes, redirections, command substitution or command lists. Those are
//! refused with a message rather than passed on literally, so nobody believes they happened.
//!
//! The filter is an allow-list of subcommands, then a scan of every flag in every spelling
//! (`--flag=value`, `--flag value`, `-f value`, `-fvalue`, short clusters such as `-itf`) for
//! what would read or write files on the server, start an editor or a listener, or change the
//! identity or the target kubectl uses. It fails closed: a short flag it does not know is
//! refused, and a flag it does not know to take a value is treated as a switch, so whatever
//! follows is checked as a flag too.

/// Subcommands a web shell may run. Everything else (plugins included: they are executables
/// on the server's PATH) is refused.
pub const ALLOWED: &[&str] = &[
    "annotate",
    "api-resources",
    "api-versions",
    "apply",
    "attach",
    "auth",
    "cluster-info",
    "create",
    "delete",
    "describe",
    "events",
    "exec",
    "explain",
    "expose",
    "get",
    "help",
    "label",
    "logs",
    "patch",
    "rollout",
    "run",
    "scale",
    "set",
    "top",
    "version",
    "wait",
];

/// Why some well-known subcommands are refused, in words.
fn refused_subcommand(sub: &str) -> Option<&'static str> {
    Some(match sub {
        "cp" => "kubectl cp reads and writes files on Warden's server",
        "edit" => "kubectl edit starts an editor on Warden's server; use kubectl patch or apply -f - instead",
        "proxy" => "kubectl proxy listens on Warden's server",
        "port-forward" => "kubectl port-forward listens on Warden's server",
        "config" => "kubectl config changes the shell's own credentials; they are fixed for this terminal",
        "plugin" => "kubectl plugins are programs on Warden's server",
        "diff" => "kubectl diff runs a diff program on Warden's server",
        "debug" => "kubectl debug is not available in the web shell",
        "kustomize" => "kubectl kustomize reads files on Warden's server",
        "replace" => "kubectl replace reads files on Warden's server; use kubectl apply -f - instead",
        "completion" | "options" => "this subcommand is not available in the web shell",
        _ => return None,
    })
}

/// Flags never accepted, in any spelling, and why.
fn refused_flag(name: &str) -> Option<&'static str> {
    Some(match name {
        "kubeconfig"
        | "token"
        | "as"
        | "as-group"
        | "as-uid"
        | "server"
        | "context"
        | "cluster"
        | "user"
        | "certificate-authority"
        | "insecure-skip-tls-verify"
        | "client-certificate"
        | "client-key"
        | "username"
        | "password"
        | "tls-server-name"
        | "disable-compression" => "the shell's identity and target are fixed for this terminal",
        "kustomize" => "--kustomize reads files on Warden's server",
        "kuberc" => "--kuberc reads a preferences file on Warden's server",
        "from-file" | "from-env-file" | "env-file" => "it reads files on Warden's server",
        "cert" | "key" => "it reads files on Warden's server",
        "cache-dir" | "log-dir" | "log-file" | "output-directory" | "profile"
        | "profile-output" => "it writes files on Warden's server",
        "edit" => "--edit starts an editor on Warden's server",
        _ if name.contains("file") => "it reads or writes files on Warden's server",
        _ if name.ends_with("-dir") || name.ends_with("directory") => {
            "it reads or writes files on Warden's server"
        }
        _ => return None,
    })
}

/// Long flags known to take a value (`--flag value`). Only flags that take one in every
/// subcommand: a switch listed here would let its "value" hide a flag from the scan.
const LONG_WITH_VALUE: &[&str] = &[
    "chunk-size",
    "cluster-ip",
    "container",
    "containers",
    "env",
    "external-ip",
    "field-manager",
    "field-selector",
    "filename",
    "for",
    "grace-period",
    "image",
    "image-pull-policy",
    "label-columns",
    "labels",
    "limit-bytes",
    "limits",
    "log-flush-frequency",
    "max-log-requests",
    "name",
    "namespace",
    "output",
    "overrides",
    "patch",
    "pod-running-timeout",
    "port",
    "protocol",
    "replicas",
    "request-timeout",
    "requests",
    "restart",
    "selector",
    "serviceaccount",
    "session-affinity",
    "since",
    "since-time",
    "sort-by",
    "subresource",
    "tail",
    "target-port",
    "template",
    "timeout",
    "type",
    "v",
    "vmodule",
];

/// Short flags that are switches in every subcommand (`logs` adds `-f` follow and `-p`
/// previous).
const SHORT_SWITCHES: &[char] = &['A', 'R', 'w', 'q', 'i', 't', 'h'];
/// Short flags that take a value (`-n ns`, `-nns`, `-n=ns`).
const SHORT_WITH_VALUE: &[char] = &['n', 'l', 'o', 'c', 'f', 'k', 's', 'L', 'e', 'r', 'p', 'v'];

/// The long name of a short flag, for the checks that follow.
fn long_of(c: char) -> &'static str {
    match c {
        'n' => "namespace",
        'l' => "selector",
        'o' => "output",
        'c' => "container",
        'f' => "filename",
        'k' => "kustomize",
        's' => "server",
        'L' => "label-columns",
        'e' => "env",
        'r' => "replicas",
        'p' => "patch",
        'v' => "v",
        _ => "",
    }
}

/// A line that is not run, and the message the person sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Split a line into words: whitespace separates, `'...'` is literal, `"..."` allows `\"`
/// and `\\`, a backslash outside quotes escapes the next character. Shell operators are
/// refused, since no shell runs.
pub fn tokenize(line: &str) -> Result<Vec<String>, Refused> {
    let no_shell = |what: &str| {
        Refused(format!(
            "{what} is not supported: the web shell runs one kubectl command per line, without a shell"
        ))
    };
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Refused("unterminated ' quote".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(Refused("unterminated \" quote".into())),
                        },
                        Some('`') => return Err(no_shell("command substitution (`...`)")),
                        Some('$') if chars.peek() == Some(&'(') => {
                            return Err(no_shell("command substitution ($(...))"))
                        }
                        Some(c) => cur.push(c),
                        None => return Err(Refused("unterminated \" quote".into())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(Refused("a line cannot end with \\".into())),
                }
            }
            '|' => return Err(no_shell("a pipe (|)")),
            '>' | '<' => return Err(no_shell("redirection (< or >)")),
            ';' => return Err(no_shell("a command list (;)")),
            '&' => return Err(no_shell("&& or &")),
            '`' => return Err(no_shell("command substitution (`...`)")),
            '$' if chars.peek() == Some(&'(') => {
                return Err(no_shell("command substitution ($(...))"))
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// What the filter found out about an accepted command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The subcommand (`get`, `apply`...).
    pub subcommand: String,
    /// It reads a manifest from the terminal (`-f -`).
    pub reads_stdin: bool,
}

/// Check kubectl's arguments (the words after `kubectl`).
pub fn check(args: &[String]) -> Result<Checked, Refused> {
    let mut subcommand: Option<String> = None;
    let mut positional: Vec<&str> = Vec::new();
    let mut reads_stdin = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        if a == "--" {
            if subcommand.is_none() {
                return Err(Refused("a kubectl subcommand must come before --".into()));
            }
            // What follows is a command for the container (exec, run): not kubectl's flags.
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (spelled, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            // kubectl reads `_` in a flag's name as `-` (`--cache_dir` is `--cache-dir`):
            // every comparison is on the name as kubectl will read it.
            let normalized = spelled.replace('_', "-");
            let name = normalized.as_str();
            let takes_value = LONG_WITH_VALUE.contains(&name);
            let value = match (inline, takes_value) {
                (Some(v), _) => Some(v),
                (None, true) => {
                    let v = args.get(i).cloned();
                    i += 1;
                    Some(v.ok_or_else(|| Refused(format!("--{name} needs a value")))?)
                }
                (None, false) => None,
            };
            check_flag(
                name,
                value.as_deref(),
                &mut reads_stdin,
                &format!("--{spelled}"),
            )?;
            continue;
        }
        if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let logs = subcommand.as_deref() == Some("logs");
            let chars: Vec<char> = short.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let switch = SHORT_SWITCHES.contains(&c) || (logs && matches!(c, 'f' | 'p'));
                if switch {
                    continue;
                }
                if !SHORT_WITH_VALUE.contains(&c) {
                    return Err(Refused(format!(
                        "-{c} is not a flag the web shell knows; spell it out with --"
                    )));
                }
                let rest: String = chars[j..].iter().collect();
                let value = if !rest.is_empty() {
                    rest.strip_prefix('=').unwrap_or(&rest).to_owned()
                } else {
                    let v = args.get(i).cloned();
                    i += 1;
                    v.ok_or_else(|| Refused(format!("-{c} needs a value")))?
                };
                check_flag(long_of(c), Some(&value), &mut reads_stdin, &format!("-{c}"))?;
                break;
            }
            continue;
        }
        // A positional word: the subcommand first, then its own subcommand and arguments.
        if subcommand.is_none() {
            if let Some(why) = refused_subcommand(a) {
                return Err(Refused(format!("{why} (refused: kubectl {a})")));
            }
            if !ALLOWED.contains(&a) {
                return Err(Refused(format!(
                    "kubectl {a} is not available in the web shell; type help for what is"
                )));
            }
            subcommand = Some(a.to_owned());
        } else {
            positional.push(a);
        }
    }
    let Some(subcommand) = subcommand else {
        return Err(Refused(
            "which kubectl subcommand? type help for those available".into(),
        ));
    };
    // A flag this filter does not know to take a value is read as a switch, so its value
    // counts as a positional word here while kubectl reads the word after it as the
    // subcommand's own subcommand: the refused ones are looked for among every positional
    // word, not only the first.
    let any = |words: &[&str]| positional.iter().any(|p| words.contains(p));
    let second = positional.first().copied();
    match subcommand.as_str() {
        "auth" if !matches!(second, Some("can-i" | "whoami")) || any(&["reconcile"]) => {
            return Err(Refused(
                "only kubectl auth can-i and auth whoami are available in the web shell".into(),
            ))
        }
        "cluster-info" if any(&["dump"]) => {
            return Err(Refused(
                "kubectl cluster-info dump writes files on Warden's server".into(),
            ))
        }
        "apply" if any(&["edit-last-applied"]) => {
            return Err(Refused(
                "kubectl apply edit-last-applied starts an editor on Warden's server".into(),
            ))
        }
        _ => {}
    }
    Ok(Checked {
        subcommand,
        reads_stdin,
    })
}

fn check_flag(
    name: &str,
    value: Option<&str>,
    reads_stdin: &mut bool,
    spelled: &str,
) -> Result<(), Refused> {
    if name == "filename" {
        return match value {
            Some("-") => {
                *reads_stdin = true;
                Ok(())
            }
            _ => Err(Refused(format!(
                "{spelled} reads files on Warden's server: only {spelled} - is accepted (paste the manifest, then Ctrl-D)"
            ))),
        };
    }
    if let Some(why) = refused_flag(name) {
        return Err(Refused(format!("{spelled} is not accepted: {why}")));
    }
    if name == "output" {
        // Every output format whose template is a path: go-template-file, templatefile,
        // jsonpath-file, custom-columns-file, in any case (and whatever kubectl adds later).
        if value.is_some_and(|v| v.to_ascii_lowercase().contains("file")) {
            return Err(Refused(format!(
                "{spelled} with a template file reads files on Warden's server; give the template inline"
            )));
        }
    }
    Ok(())
}

/// The arguments as the audit log keeps them: literal values of secrets are masked
/// (`--from-literal` values, registry and API passwords and tokens, the values of
/// `set env`, and the body of a patch on a secret). A read-only auditor sees a terminal's
/// commands, never a secret typed into one.
pub fn for_audit(args: &[String]) -> Vec<String> {
    /// Flags whose whole value is a secret.
    const SECRET_VALUES: &[&str] = &["docker-password", "password", "token"];
    // The command's words before `--` that are not flags: `set env`, `patch secret …`.
    let words: Vec<&str> = args
        .iter()
        .take_while(|a| a.as_str() != "--")
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let set_env = words.starts_with(&["set", "env"]);
    let patches_a_secret = words.first() == Some(&"patch")
        && words[1..].iter().any(|w| {
            let r = w.split(['/', '.']).next().unwrap_or_default();
            r == "secret" || r == "secrets"
        });
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next: Option<fn(&str) -> String> = None;
    let mut after_dashes = false;
    for a in args {
        if let Some(mask) = mask_next.take() {
            out.push(mask(a));
            continue;
        }
        if after_dashes || a == "--" {
            after_dashes = true;
            out.push(a.clone());
            continue;
        }
        let flag = a
            .strip_prefix("--")
            .map(|f| f.split_once('=').map_or((f, None), |(n, v)| (n, Some(v))));
        let short = a
            .strip_prefix('-')
            .filter(|f| !f.starts_with('-'))
            .map(|f| f.split_once('=').map_or((f, None), |(n, v)| (n, Some(v))));
        match (flag, short) {
            (Some(("from-literal", Some(v))), _) => {
                out.push(format!("--from-literal={}", mask_literal(v)))
            }
            (Some(("from-literal", None)), _) => {
                mask_next = Some(mask_literal);
                out.push(a.clone());
            }
            (Some((name, Some(_))), _) if SECRET_VALUES.contains(&name) => {
                out.push(format!("--{name}=***"))
            }
            (Some((name, None)), _) if SECRET_VALUES.contains(&name) => {
                mask_next = Some(|_| "***".to_owned());
                out.push(a.clone());
            }
            // `set env`: `--env=K=V` / `-e K=V`.
            (Some(("env", Some(v))), _) if set_env => {
                out.push(format!("--env={}", mask_literal(v)))
            }
            (Some(("env", None)), _) | (_, Some(("e", None))) if set_env => {
                mask_next = Some(mask_literal);
                out.push(a.clone());
            }
            (_, Some(("e", Some(v)))) if set_env => out.push(format!("-e={}", mask_literal(v))),
            // A patch's body on a secret: `--patch=…`, `-p …`.
            (Some(("patch", Some(_))), _) if patches_a_secret => out.push("--patch=***".into()),
            (_, Some(("p", Some(_)))) if patches_a_secret => out.push("-p=***".into()),
            (Some(("patch", None)), _) | (_, Some(("p", None))) if patches_a_secret => {
                mask_next = Some(|_| "***".to_owned());
                out.push(a.clone());
            }
            // `set env … KEY=VALUE`.
            (None, None) if set_env && a.contains('=') => out.push(mask_literal(a)),
            _ => out.push(a.clone()),
        }
    }
    out
}

fn mask_literal(kv: &str) -> String {
    match kv.split_once('=') {
        Some((k, _)) => format!("{k}=***"),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        tokenize(s).expect("tokenizes")
    }

    fn ok(line: &str) -> Checked {
        check(&words(line)).unwrap_or_else(|e| panic!("{line:?} refused: {e}"))
    }

    fn refused(line: &str) -> String {
        match check(&words(line)) {
            Ok(c) => panic!("{line:?} accepted: {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn tokenizer_quotes_and_escapes() {
        assert_eq!(words("get  pods -n apple"), ["get", "pods", "-n", "apple"]);
        assert_eq!(words("a 'b c' \"d e\" f\\ g"), ["a", "b c", "d e", "f g"]);
        assert_eq!(words(r#""a\"b" 'c\d' "x\y""#), ["a\"b", "c\\d", "x\\y"]);
        assert_eq!(words("'' x"), ["", "x"]);
        assert_eq!(words("'$(id)' '`id`' 'a|b>c'"), ["$(id)", "`id`", "a|b>c"]);
        assert_eq!(words("-l app=web,tier!=db"), ["-l", "app=web,tier!=db"]);
        assert!(words("   ").is_empty());
    }

    #[test]
    fn tokenizer_refuses_shell_syntax() {
        for line in [
            "get pods | grep x",
            "get pods > /tmp/x",
            "apply -f - < /etc/passwd",
            "get pods; id",
            "get pods && id",
            "get pods &",
            "get $(id)",
            "get `id`",
            "get \"$(id)\"",
            "get \"`id`\"",
            "get 'open",
            "get \"open",
            "get pods\\",
        ] {
            assert!(tokenize(line).is_err(), "{line:?}");
        }
        assert!(tokenize("get pods | x")
            .unwrap_err()
            .0
            .contains("without a shell"));
    }

    #[test]
    fn allowed_commands() {
        for line in [
            "get pods -n apple",
            "get pods -A -o wide",
            "get pods -ojson",
            "get pods -o=jsonpath={.items[*].metadata.name}",
            "get pods -o go-template --template={{.metadata.name}}",
            "get pods -o template --template '{{range .items}}{{.metadata.name}} profile{{end}}'",
            "-n apple get pods",
            "--namespace=apple get pods",
            "--namespace apple get pods",
            "get pods -w",
            "get --raw /api",
            "describe pod web",
            "logs -f web",
            "logs -fp web -c main",
            "logs web --follow --tail 10",
            "exec -it web -- sh -c 'ls -f /etc'",
            "exec web -- cat -f /etc/passwd",
            "attach -it web",
            "top pods",
            "explain pods.spec",
            "api-resources",
            "api-versions",
            "version",
            "cluster-info",
            "auth can-i list pods",
            "auth whoami",
            "create deployment web --image=nginx -r 2",
            "create secret generic s --from-literal=a=b",
            "apply -f -",
            "apply -f=-",
            "apply -f-",
            "apply --filename -",
            "apply --filename=-",
            "create -f - --dry-run=server",
            "apply view-last-applied deploy/web",
            "patch deploy web -p '{\"spec\":{}}' --type merge",
            "label pod web a=b --overwrite",
            "annotate pod web a=b",
            "delete pod web --grace-period 0",
            "delete pod web -i",
            "scale deploy web --replicas=3",
            "rollout restart deploy/web",
            "rollout status deploy/web -w",
            "run tmp --image=busybox -it --rm --restart=Never -- sh",
            "expose deploy web --port 80",
            "set image deploy/web web=nginx:2",
            "set env deploy/web -e A=B",
            "wait --for=condition=Ready pod/web",
            "events -w",
            "get pods -v=6",
            "help",
        ] {
            ok(line);
        }
        assert!(ok("apply -f -").reads_stdin);
        assert!(!ok("get pods").reads_stdin);
        assert_eq!(ok("-n x get pods").subcommand, "get");
    }

    #[test]
    fn every_refused_flag_in_every_spelling() {
        let flags = [
            "kubeconfig",
            "token",
            "as",
            "as-group",
            "as-uid",
            "server",
            "context",
            "cluster",
            "user",
            "certificate-authority",
            "client-certificate",
            "client-key",
            "username",
            "password",
            "cache-dir",
            "kustomize",
            "from-file",
            "from-env-file",
            "kuberc",
        ];
        for f in flags {
            for line in [
                format!("get pods --{f}=x"),
                format!("get pods --{f} x"),
                format!("--{f}=x get pods"),
                format!("--{f} x get pods"),
            ] {
                refused(&line);
            }
        }
        // kubectl reads `_` as `-` in a flag's name: so does the filter.
        for line in [
            "get pods --cache_dir=/tmp/x",
            "get pods --client_key=/etc/hostname",
            "get pods --client_certificate /etc/hostname",
            "get pods --certificate_authority=/etc/hostname",
            "get pods --insecure_skip_tls_verify",
            "get pods --as_group=system:masters",
            "get pods --log_file=/tmp/x",
            "create configmap x --from_file=/etc/passwd",
            "get pods --tls_server_name=x",
        ] {
            refused(line);
        }
        assert!(refused("get pods --cache_dir=/tmp/x").contains("--cache_dir"));
        ok("get pods --all_namespaces");
        refused("get pods --insecure-skip-tls-verify");
        refused("get pods --insecure-skip-tls-verify=true");
        refused("--insecure-skip-tls-verify get pods");
        for line in [
            "get pods -s https://evil",
            "get pods -shttps://evil",
            "get pods -s=https://evil",
            "-s https://evil get pods",
            "apply -k dir",
            "apply -kdir",
            "get pods -Ak dir",
            "create secret generic s --from-file=/etc/passwd",
            "create configmap c --from-env-file /etc/environment",
            "create secret tls t --cert=/etc/ssl/a --key=/etc/ssl/b",
            "get pods --log-file=/tmp/x",
            "get pods --profile=cpu --profile-output=/tmp/x",
            "create -f - --edit",
        ] {
            refused(line);
        }
    }

    #[test]
    fn filename_other_than_stdin_is_refused_in_every_spelling() {
        for line in [
            "apply -f /etc/passwd",
            "apply -f=/etc/passwd",
            "apply -f/etc/passwd",
            "apply --filename /etc/passwd",
            "apply --filename=/etc/passwd",
            "apply -Rf /etc",
            "apply -Rf/etc",
            "get -Af /etc/passwd",
            "get -itf /etc/passwd",
            "create -f https://example.com/x.yaml",
            "delete -f ./x.yaml",
            "exec -f /etc/passwd -- ls",
            "-f /etc/passwd apply",
            "apply -f - -f /etc/passwd",
            "apply -f",
            "get pods -o go-template-file=/etc/passwd",
            "get pods -ojsonpath-file=/etc/passwd",
            "get pods --output=custom-columns-file=/etc/passwd",
            "get pods --template=x -o template-file",
            "get pods -o templatefile=/etc/passwd",
            "get pods -otemplatefile --template=/etc/passwd",
            "get pod web -o templatefile --template=kubeconfig",
            "get pods --output templatefile --template kubeconfig",
            "get pods -Ao TemplateFile --template kubeconfig",
            "get pods -o=Go-Template-File --template kubeconfig",
            "get pods -o jsonpath-file --template=kubeconfig",
        ] {
            let why = refused(line);
            assert!(
                why.contains("files on Warden's server") || why.contains("needs a value"),
                "{line}: {why}"
            );
        }
        // In `logs`, -f is --follow; a stray path after it is just an argument to logs.
        ok("logs -f web");
    }

    #[test]
    fn unknown_short_flags_fail_closed() {
        assert!(refused("get pods -xf /etc/passwd").contains("-x"));
        assert!(refused("get pods -Z").contains("spell it out"));
    }

    #[test]
    fn refused_subcommands_say_why() {
        for (line, word) in [
            ("cp web:/etc/passwd /tmp/x", "files"),
            ("edit deploy web", "editor"),
            ("proxy", "listens"),
            ("port-forward web 8080:80", "listens"),
            ("config view", "credentials"),
            ("config use-context x", "credentials"),
            ("plugin list", "programs"),
            ("diff -f -", "diff"),
            ("debug web", "not available"),
            ("kustomize .", "files"),
            ("replace -f -", "apply"),
            ("whoami-plugin", "not available"),
            ("auth reconcile -f -", "can-i"),
            ("cluster-info dump", "files"),
            ("apply edit-last-applied deploy/web", "editor"),
            ("", "which"),
            ("-n apple", "which"),
            ("-- get", "before --"),
        ] {
            let why = refused(line);
            assert!(why.contains(word), "{line}: {why}");
        }
        // A value after an unknown long flag is read as the subcommand: refused, not run.
        refused("--some-new-flag x get pods");
        // A flag's value cannot hide the subcommand's own subcommand from the filter: the
        // global --log-flush-frequency takes one, and so may any flag it does not know.
        for (line, word) in [
            (
                "apply --log-flush-frequency 5s edit-last-applied deploy/web",
                "editor",
            ),
            (
                "apply --prune-allowlist core/v1/Pod edit-last-applied deploy/web",
                "editor",
            ),
            ("cluster-info --log-flush-frequency 5s dump", "files"),
            ("cluster-info --something x dump", "files"),
            ("auth --log-flush-frequency can-i reconcile -f -", "can-i"),
            ("auth --something can-i reconcile -f -", "can-i"),
        ] {
            let why = refused(line);
            assert!(why.contains(word), "{line}: {why}");
        }
    }

    #[test]
    fn secrets_are_masked_for_the_audit_log() {
        let a = words("create secret generic s --from-literal=pw=hunter2 --from-literal user=bob");
        assert_eq!(
            for_audit(&a),
            [
                "create",
                "secret",
                "generic",
                "s",
                "--from-literal=pw=***",
                "--from-literal",
                "user=***"
            ]
        );
        let a = words(
            "create secret docker-registry r --docker-username=u --docker-password=p=ss --docker-password hunter2",
        );
        let masked = for_audit(&a);
        assert_eq!(masked[4], "--docker-username=u");
        assert_eq!(masked[5], "--docker-password=***");
        assert_eq!(masked[6], "--docker-password");
        assert_eq!(masked[7], "***");
        assert!(!masked.concat().contains("hunter2") && !masked.concat().contains("p=ss"));
        // `set env` values, in every spelling.
        let a = words(
            "set env deploy/db DB_PASSWORD=hunter2 --env=API_KEY=k3y -e TOKEN=t0k --containers=main",
        );
        assert_eq!(
            for_audit(&a),
            [
                "set",
                "env",
                "deploy/db",
                "DB_PASSWORD=***",
                "--env=API_KEY=***",
                "-e",
                "TOKEN=***",
                "--containers=main"
            ]
        );
        // A patch on a secret hides its body; one on a deployment does not.
        for line in [
            r#"patch secret db -p {"data":{"pw":"aHVudGVyMg=="}}"#,
            r#"patch secrets/db --patch={"data":{"pw":"aHVudGVyMg=="}}"#,
            r#"patch -n apple secret.v1 db --type=merge -p={"stringData":{"pw":"aHVudGVyMg=="}}"#,
        ] {
            let masked = for_audit(&words(line)).join(" ");
            assert!(!masked.contains("aHVudGVyMg"), "{line}: {masked}");
            assert!(masked.contains("***"), "{masked}");
        }
        let a = words(r#"patch deploy web -p {"spec":{"replicas":3}}"#);
        assert_eq!(for_audit(&a), a);
        // API credentials given on the command line.
        let masked = for_audit(&words("get pods --token=abc --password hunter2")).join(" ");
        assert_eq!(masked, "get pods --token=*** --password ***");
        // What follows `--` (the command an exec runs) is kept as typed.
        let a = words("exec box -- env DB_PASSWORD=x");
        assert_eq!(for_audit(&a), a);
    }
}
