//! Label and field selectors as carried by `?labelSelector=` and `?fieldSelector=` on LIST and WATCH.
//!
//! Label selector grammar (apimachinery `labels.Parse`): comma-separated requirements, each one of
//! `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key` (exists),
//! `!key` (does not exist), `key>N`, `key<N`. Field selector grammar (`fields.ParseSelector`):
//! comma-separated `field=value`, `field==value`, `field!=value`; a value may escape `\,` `\=` `\\`.
//!
//! Both parsers take untrusted query text and never panic: every malformation is a [`SelectorError`].

use std::collections::BTreeMap;
use std::fmt;

/// Longest label value, and longest name part of a label key (apimachinery `validation.LabelValueMaxLength`).
const LABEL_NAME_MAX_LEN: usize = 63;
/// Longest DNS-1123 subdomain allowed as the prefix of a label key.
const LABEL_PREFIX_MAX_LEN: usize = 253;

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// A requirement has no key (e.g. `=a` or a stray comma).
    MissingKey(usize),
    /// The key is not a qualified name (optional DNS subdomain prefix + `/` + name of at most 63 chars).
    InvalidKey(String),
    /// The value is not a valid label value (at most 63 chars, alphanumerics with `-_.` inside).
    InvalidValue(String),
    /// An operator was expected after the key but something else came.
    ExpectedOperator(String),
    /// `in`/`notin` must be followed by a parenthesized list.
    ExpectedOpenParen(String),
    /// The value list of `in`/`notin` is not closed by `)`.
    UnterminatedSet,
    /// Something other than `,` or the end followed a complete requirement.
    TrailingInput(String),
    /// `>`/`<` need an integer value.
    NotAnInteger(String),
    /// A field selector term has no `=`, `==` or `!=`.
    InvalidFieldTerm(String),
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingKey(at) => write!(f, "found no key at position {at}"),
            Self::InvalidKey(k) => write!(f, "invalid label key \"{k}\": must be a qualified name"),
            Self::InvalidValue(v) => write!(
                f,
                "invalid label value: \"{v}\": must be 63 characters or less, alphanumeric, '-', '_' or '.'"
            ),
            Self::ExpectedOperator(t) => write!(f, "found '{t}', expected: '=', '!=', '==', 'in', notin'"),
            Self::ExpectedOpenParen(t) => write!(f, "found '{t}', expected: '('"),
            Self::UnterminatedSet => write!(f, "found end of string, expected: ')'"),
            Self::TrailingInput(t) => write!(f, "found '{t}', expected: ',' or 'end of string'"),
            Self::NotAnInteger(v) => {
                write!(f, "for 'Gt', 'Lt' operators, the value must be an integer: \"{v}\"")
            }
            Self::InvalidFieldTerm(t) => write!(f, "invalid selector: '{t}'; can't understand '{t}'"),
        }
    }
}

impl std::error::Error for SelectorError {}

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value`: also true when the label is absent.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: also true when the label is absent.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>N` (integer comparison; false when absent or not an integer).
    GreaterThan(String, i64),
    /// `key<N`.
    LessThan(String, i64),
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::GreaterThan(k, n) => {
                labels.get(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l > *n)
            }
            Self::LessThan(k, n) => labels.get(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l < *n),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// All requirements; a label set matches when each one holds.
    pub requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Self::Ident(s) => s.clone(),
            Self::Not => "!".into(),
            Self::NotEquals => "!=".into(),
            Self::Equals => "=".into(),
            Self::DoubleEquals => "==".into(),
            Self::Gt => ">".into(),
            Self::Lt => "<".into(),
            Self::Open => "(".into(),
            Self::Close => ")".into(),
            Self::Comma => ",".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | '(' | ')' | ',')
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEquals, 2),
            ('!', _) => (Token::Not, 1),
            ('=', Some('=')) => (Token::DoubleEquals, 2),
            ('=', _) => (Token::Equals, 1),
            ('>', _) => (Token::Gt, 1),
            ('<', _) => (Token::Lt, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            _ => {
                let start = i;
                while chars.get(i).is_some_and(|c| !c.is_whitespace() && !is_special(*c)) {
                    i += 1;
                }
                out.push(Token::Ident(chars.get(start..i).unwrap_or_default().iter().collect()));
                continue;
            }
        };
        out.push(tok);
        i += len;
    }
    out
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A label name or value body: alphanumeric at both ends, `-_.` allowed inside.
fn valid_name_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars().all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_PREFIX_MAX_LEN
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether `key` is a valid label key (qualified name).
pub fn valid_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => valid_dns_subdomain(prefix) && valid_name_part(name, LABEL_NAME_MAX_LEN),
        None => valid_name_part(key, LABEL_NAME_MAX_LEN),
    }
}

/// Whether `value` is a valid label value (may be empty).
pub fn valid_label_value(value: &str) -> bool {
    value.is_empty() || valid_name_part(value, LABEL_NAME_MAX_LEN)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(k)) => {
                if valid_label_key(&k) {
                    Ok(k)
                } else {
                    Err(SelectorError::InvalidKey(k))
                }
            }
            _ => Err(SelectorError::MissingKey(self.pos.saturating_sub(1))),
        }
    }

    /// A single value after `=`/`!=`; an absent value (next is `,` or end) is the empty string.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Token::Ident(v)) => {
                let v = v.clone();
                self.pos += 1;
                if valid_label_value(&v) {
                    Ok(v)
                } else {
                    Err(SelectorError::InvalidValue(v))
                }
            }
            Some(Token::Comma) | None => Ok(String::new()),
            Some(t) => Err(SelectorError::InvalidValue(t.text())),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => return Err(SelectorError::ExpectedOpenParen(t.text())),
            None => return Err(SelectorError::ExpectedOpenParen(String::new())),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Close) => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Some(Token::Ident(v)) => {
                    if !valid_label_value(&v) {
                        return Err(SelectorError::InvalidValue(v));
                    }
                    values.push(v);
                    match self.next() {
                        Some(Token::Comma) => {}
                        Some(Token::Close) => return Ok(values),
                        Some(t) => return Err(SelectorError::TrailingInput(t.text())),
                        None => return Err(SelectorError::UnterminatedSet),
                    }
                }
                Some(Token::Comma) => values.push(String::new()),
                Some(t) => return Err(SelectorError::InvalidValue(t.text())),
                None => return Err(SelectorError::UnterminatedSet),
            }
        }
    }

    fn integer(&mut self) -> Result<i64, SelectorError> {
        match self.next() {
            Some(Token::Ident(v)) => v.parse().map_err(|_| SelectorError::NotAnInteger(v)),
            Some(t) => Err(SelectorError::NotAnInteger(t.text())),
            None => Err(SelectorError::NotAnInteger(String::new())),
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(LabelRequirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek().cloned() {
            None | Some(Token::Comma) => Ok(LabelRequirement::Exists(key)),
            Some(Token::Equals) | Some(Token::DoubleEquals) => {
                self.pos += 1;
                Ok(LabelRequirement::Equals(key, self.value()?))
            }
            Some(Token::NotEquals) => {
                self.pos += 1;
                Ok(LabelRequirement::NotEquals(key, self.value()?))
            }
            Some(Token::Gt) => {
                self.pos += 1;
                Ok(LabelRequirement::GreaterThan(key, self.integer()?))
            }
            Some(Token::Lt) => {
                self.pos += 1;
                Ok(LabelRequirement::LessThan(key, self.integer()?))
            }
            Some(Token::Ident(op)) if op == "in" => {
                self.pos += 1;
                Ok(LabelRequirement::In(key, self.set()?))
            }
            Some(Token::Ident(op)) if op == "notin" => {
                self.pos += 1;
                Ok(LabelRequirement::NotIn(key, self.set()?))
            }
            Some(t) => Err(SelectorError::ExpectedOperator(t.text())),
        }
    }
}

impl LabelSelector {
    /// Parses a label selector; the empty (or all-blank) string is the selector matching everything.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        let mut p = Parser { toks: lex(input), pos: 0 };
        let mut requirements = Vec::new();
        if p.toks.is_empty() {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Token::Comma) => {
                    if p.peek().is_none() {
                        return Err(SelectorError::MissingKey(p.pos));
                    }
                }
                Some(t) => return Err(SelectorError::TrailingInput(t.text())),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// One field selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRequirement {
    /// `field=value` / `field==value`.
    Equals(String, String),
    /// `field!=value`.
    NotEquals(String, String),
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// All terms; an object matches when each one holds.
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on unescaped commas, keeping escapes for the term parser.
fn split_terms(input: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    terms.push(cur);
    terms
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                _ => return Err(SelectorError::InvalidFieldTerm(s.to_string())),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a field selector; the empty string matches everything.
    pub fn parse(input: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in split_terms(input) {
            // Find the first unescaped operator.
            let bytes = term.as_bytes();
            let mut i = 0;
            let mut found = None;
            while i < bytes.len() {
                match bytes.get(i) {
                    Some(b'\\') => i += 2,
                    Some(b'!') if bytes.get(i + 1) == Some(&b'=') => {
                        found = Some((i, 2, false));
                        break;
                    }
                    Some(b'=') => {
                        let len = if bytes.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                        found = Some((i, len, true));
                        break;
                    }
                    _ => i += 1,
                }
            }
            let Some((at, len, eq)) = found else {
                return Err(SelectorError::InvalidFieldTerm(term));
            };
            let field = term.get(..at).unwrap_or_default().trim();
            let value = term.get(at + len..).unwrap_or_default().trim();
            if field.is_empty() {
                return Err(SelectorError::InvalidFieldTerm(term.clone()));
            }
            let field = unescape(field)?;
            let value = unescape(value)?;
            requirements.push(if eq {
                FieldRequirement::Equals(field, value)
            } else {
                FieldRequirement::NotEquals(field, value)
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether every term holds; `get` returns a field's value, `None` for an absent field
    /// (compared as the empty string, as the apiserver does).
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| match r {
            FieldRequirement::Equals(f, v) => get(f).unwrap_or_default() == *v,
            FieldRequirement::NotEquals(f, v) => get(f).unwrap_or_default() != *v,
        })
    }

    /// The fields this selector names, so a server can reject unsupported ones.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| match r {
            FieldRequirement::Equals(f, _) | FieldRequirement::NotEquals(f, _) => f.as_str(),
        })
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_label_selector_matches_everything() {
        let s = LabelSelector::parse("  ").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn equality_and_inequality() {
        let s = LabelSelector::parse("app=web, tier==front,env!=prod").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "front"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("tier", "front")])));
    }

    #[test]
    fn set_based() {
        let s = LabelSelector::parse("env in (prod, dev),tier notin (db)").unwrap();
        assert_eq!(
            s.requirements,
            vec![
                LabelRequirement::In("env".into(), vec!["prod".into(), "dev".into()]),
                LabelRequirement::NotIn("tier".into(), vec!["db".into()])
            ]
        );
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(s.matches(&labels(&[("env", "prod"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("env", "qa")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn exists_and_not_exists() {
        let s = LabelSelector::parse("node-role.kubernetes.io/control-plane,!example.com/skip").unwrap();
        assert!(s.matches(&labels(&[("node-role.kubernetes.io/control-plane", "")])));
        assert!(
            !s.matches(&labels(&[("node-role.kubernetes.io/control-plane", ""), ("example.com/skip", "x")]))
        );
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn empty_value_and_numeric_comparisons() {
        let s = LabelSelector::parse("a=,n>3,m<10").unwrap();
        assert!(s.matches(&labels(&[("a", ""), ("n", "4"), ("m", "9")])));
        assert!(!s.matches(&labels(&[("a", ""), ("n", "3"), ("m", "9")])));
        assert!(!s.matches(&labels(&[("a", "x"), ("n", "4"), ("m", "9")])));
        assert_eq!(LabelSelector::parse("n>x"), Err(SelectorError::NotAnInteger("x".into())));
    }

    #[test]
    fn malformed_label_selectors_are_errors() {
        assert!(matches!(LabelSelector::parse("=a"), Err(SelectorError::MissingKey(_))));
        assert!(matches!(LabelSelector::parse("a=b,"), Err(SelectorError::MissingKey(_))));
        assert!(matches!(LabelSelector::parse("a in b"), Err(SelectorError::ExpectedOpenParen(_))));
        assert_eq!(LabelSelector::parse("a in (b,c"), Err(SelectorError::UnterminatedSet));
        assert!(matches!(LabelSelector::parse("a b"), Err(SelectorError::ExpectedOperator(_))));
        assert!(matches!(LabelSelector::parse("-a=b"), Err(SelectorError::InvalidKey(_))));
        assert!(matches!(LabelSelector::parse("a=-b"), Err(SelectorError::InvalidValue(_))));
        assert!(matches!(LabelSelector::parse("a=b c"), Err(SelectorError::TrailingInput(_))));
        let long = "x".repeat(64);
        assert!(matches!(LabelSelector::parse(&long), Err(SelectorError::InvalidKey(_))));
        assert!(LabelSelector::parse(&"x".repeat(63)).is_ok());
        assert!(matches!(LabelSelector::parse("Bad_Prefix/a"), Err(SelectorError::InvalidKey(_))));
        assert!(!SelectorError::UnterminatedSet.to_string().is_empty());
    }

    fn pod_fields(name: &str) -> Option<String> {
        match name {
            "spec.nodeName" => Some("n1".into()),
            "status.phase" => Some("Running".into()),
            "metadata.name" => Some("a,b=c".into()),
            _ => None,
        }
    }

    #[test]
    fn field_selectors() {
        let s =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed").unwrap();
        assert!(s.matches(&pod_fields));
        assert_eq!(s.fields().collect::<Vec<_>>(), vec!["spec.nodeName", "status.phase", "status.phase"]);
        let s = FieldSelector::parse("spec.nodeName==n2").unwrap();
        assert!(!s.matches(&pod_fields));
        let s = FieldSelector::parse("status.phase!=Running").unwrap();
        assert!(!s.matches(&pod_fields));
        // Absent fields compare as "".
        let s = FieldSelector::parse("involvedObject.namespace=").unwrap();
        assert!(s.matches(&pod_fields));
        let s = FieldSelector::parse("involvedObject.namespace!=").unwrap();
        assert!(!s.matches(&pod_fields));
        // Escapes.
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(s.requirements, vec![FieldRequirement::Equals("metadata.name".into(), "a,b=c".into())]);
        assert!(s.matches(&pod_fields));
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_field_selectors_are_errors() {
        assert!(matches!(FieldSelector::parse("spec.nodeName"), Err(SelectorError::InvalidFieldTerm(_))));
        assert!(matches!(FieldSelector::parse("=x"), Err(SelectorError::InvalidFieldTerm(_))));
        assert!(matches!(FieldSelector::parse("a=b,"), Err(SelectorError::InvalidFieldTerm(_))));
        assert!(matches!(FieldSelector::parse(r"a=b\q"), Err(SelectorError::InvalidFieldTerm(_))));
    }
}
