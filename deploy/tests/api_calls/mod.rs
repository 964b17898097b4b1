//! The Kubernetes API calls a binary makes, read from its source.
//!
//! The scanner parses every module a binary compiles (following `mod` declarations from
//! `main.rs` and the `lib.rs` of each crate it links, skipping `#[cfg(test)]`) and records each
//! request a kube `Api<T>` makes: the method called on it (`get`, `patch_status`, ...), the
//! `watcher`s fed with it, and the events a `Recorder` publishes. An `Api` value is followed
//! through `let` bindings (typed, or built with a turbofish), clones, tuples, function parameters
//! and struct fields. Whatever it cannot follow is an error, not a silent pass: an `Api` whose
//! kind it cannot tell, a method it does not know, an `Api` handed to a function outside the
//! scanned code, a raw client request.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::visit::{self, Visit};
use syn::{Attribute, Expr, File, ImplItemFn, ItemFn, ItemMod, Local, Pat, Type};

/// One kind of request a binary makes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    /// The `T` of `Api<T>` (`DynamicObject` for dynamic APIs, `Event` for a Recorder).
    pub kind: String,
    /// For a dynamic API, the expression that gives its resource.
    pub dynamic: Option<String>,
    /// `Some("status")` for status requests.
    pub subresource: Option<&'static str>,
    pub verbs: Vec<&'static str>,
    /// Where in the source.
    pub at: String,
}

/// What the scanner found for one binary.
#[derive(Debug, Default)]
pub struct Scan {
    pub calls: Vec<Call>,
    /// Kinds whose every `Api` is built with a namespace: their requests stay in one namespace.
    pub namespaced_kinds: BTreeSet<String>,
    pub errors: Vec<String>,
}

/// The files of a crate's module tree, from its root file, without `#[cfg(test)]` modules.
pub fn module_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(file) = pending.pop() {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        let ast = syn::parse_file(&text).map_err(|e| format!("parsing {}: {e}", file.display()))?;
        let dir = match file.file_stem().and_then(|s| s.to_str()) {
            Some("lib" | "main" | "mod") => file.parent().map(Path::to_owned).unwrap_or_default(),
            Some(stem) => file.parent().map(|p| p.join(stem)).unwrap_or_default(),
            None => return Err(format!("{} has no file name", file.display())),
        };
        for item in &ast.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && !is_test(&m.attrs)
            {
                if m.attrs.iter().any(|a| a.path().is_ident("path")) {
                    return Err(format!("{}: #[path] modules are not followed", file.display()));
                }
                let name = m.ident.to_string();
                let candidates = [dir.join(format!("{name}.rs")), dir.join(&name).join("mod.rs")];
                let found = candidates
                    .iter()
                    .find(|c| c.is_file())
                    .ok_or_else(|| format!("{}: module {name} is in neither {:?}", file.display(), candidates))?;
                pending.push(found.clone());
            }
        }
        files.push(file);
    }
    files.sort();
    Ok(files)
}

fn is_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.meta.to_token_stream().to_string().contains("test"))
}

/// Scans the parsed files of one binary.
pub fn scan(files: &[(PathBuf, File)]) -> Scan {
    let mut known_fns = HashSet::new();
    let mut fields = HashMap::new();
    let mut scan = Scan::default();
    for (path, ast) in files {
        let mut collect = Collect { known_fns: &mut known_fns, fields: &mut fields, errors: &mut scan.errors, path };
        collect.visit_file(ast);
    }
    let mut constructions: Vec<(String, bool)> = Vec::new();
    for (path, ast) in files {
        let mut scanner = Scanner {
            path,
            known_fns: &known_fns,
            fields: &fields,
            scopes: Vec::new(),
            typed_constructors: HashSet::new(),
            calls: &mut scan.calls,
            constructions: &mut constructions,
            errors: &mut scan.errors,
        };
        scanner.visit_file(ast);
    }
    let kinds: BTreeSet<&String> = constructions.iter().map(|(k, _)| k).collect();
    scan.namespaced_kinds = kinds
        .into_iter()
        .filter(|k| constructions.iter().filter(|(c, _)| c == *k).all(|(_, namespaced)| *namespaced))
        .cloned()
        .collect();
    scan.calls.sort();
    scan
}

/// The `T` of an `Api<T>` type (through references), unwrapping `PartialObjectMeta<T>`.
fn api_kind(ty: &Type) -> Option<String> {
    match ty {
        Type::Reference(r) => api_kind(&r.elem),
        Type::Path(p) => {
            let last = p.path.segments.last()?;
            if last.ident != "Api" {
                return None;
            }
            first_type_arg(&last.arguments).map(kind_name)
        }
        _ => None,
    }
}

fn first_type_arg(args: &syn::PathArguments) -> Option<&Type> {
    match args {
        syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

fn kind_name(ty: &Type) -> String {
    if let Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
    {
        if last.ident == "PartialObjectMeta"
            && let Some(inner) = first_type_arg(&last.arguments)
        {
            return kind_name(inner);
        }
        return last.ident.to_string();
    }
    ty.to_token_stream().to_string()
}

fn mentions_api(ty: &Type) -> bool {
    ty.to_token_stream().into_iter().any(|t| t.to_string() == "Api")
}

fn at(path: &Path, span: proc_macro2::Span) -> String {
    format!("{}:{}", path.display(), span.start().line)
}

/// First pass: the functions defined in the binary, and its struct fields that hold an `Api`.
struct Collect<'a> {
    known_fns: &'a mut HashSet<String>,
    fields: &'a mut HashMap<String, String>,
    errors: &'a mut Vec<String>,
    path: &'a Path,
}

impl<'ast> Visit<'ast> for Collect<'_> {
    fn visit_item_mod(&mut self, m: &'ast ItemMod) {
        if !is_test(&m.attrs) {
            visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast ItemFn) {
        self.known_fns.insert(f.sig.ident.to_string());
    }
    fn visit_impl_item_fn(&mut self, f: &'ast ImplItemFn) {
        self.known_fns.insert(f.sig.ident.to_string());
    }
    fn visit_field(&mut self, field: &'ast syn::Field) {
        let Some(name) = &field.ident else { return };
        match api_kind(&field.ty) {
            Some(kind) => {
                self.fields.insert(name.to_string(), kind);
            }
            None if mentions_api(&field.ty) => self.errors.push(format!(
                "{}: field {name} holds an Api inside another type, which the scanner cannot follow",
                at(self.path, name.span())
            )),
            None => {}
        }
    }
}

#[derive(Clone)]
enum Binding {
    Api { kind: String, dynamic: Option<String> },
    Value(String),
}

struct Scanner<'a> {
    path: &'a Path,
    known_fns: &'a HashSet<String>,
    fields: &'a HashMap<String, String>,
    scopes: Vec<HashMap<String, Binding>>,
    /// Constructors whose kind comes from the type of the `let` they initialise.
    typed_constructors: HashSet<(usize, usize)>,
    calls: &'a mut Vec<Call>,
    constructions: &'a mut Vec<(String, bool)>,
    errors: &'a mut Vec<String>,
}

/// `Api::all`, `Api::<T>::namespaced`, ...: `(namespaced, dynamic)` of a constructor path.
fn constructor(path: &syn::Path) -> Option<(bool, bool)> {
    let segments: Vec<&syn::PathSegment> = path.segments.iter().collect();
    let [.., api, ctor] = segments.as_slice() else { return None };
    if api.ident != "Api" {
        return None;
    }
    match ctor.ident.to_string().as_str() {
        "all" => Some((false, false)),
        "all_with" => Some((false, true)),
        "namespaced" | "default_namespaced" => Some((true, false)),
        "namespaced_with" | "default_namespaced_with" => Some((true, true)),
        _ => None,
    }
}

/// The expressions of a `select!` body: `[biased;] PAT = FUTURE [, if COND] => HANDLER, ...`.
fn select_branches(input: syn::parse::ParseStream<'_>) -> syn::Result<Vec<Expr>> {
    let mut exprs = Vec::new();
    if input.peek(syn::Ident) && input.fork().parse::<syn::Ident>()? == "biased" {
        input.parse::<syn::Ident>()?;
        input.parse::<syn::Token![;]>()?;
    }
    while !input.is_empty() {
        if input.peek(syn::Token![else]) {
            input.parse::<syn::Token![else]>()?;
        } else {
            Pat::parse_single(input)?;
            input.parse::<syn::Token![=]>()?;
            exprs.push(Expr::parse_without_eager_brace(input)?);
            if input.peek(syn::Token![,]) && input.peek2(syn::Token![if]) {
                input.parse::<syn::Token![,]>()?;
                input.parse::<syn::Token![if]>()?;
                exprs.push(Expr::parse_without_eager_brace(input)?);
            }
        }
        input.parse::<syn::Token![=>]>()?;
        // A block handler ends the branch (no comma needed): parsed as an expression it would
        // swallow the next branch's pattern as call arguments.
        if input.peek(syn::token::Brace) {
            exprs.push(Expr::Block(syn::ExprBlock { attrs: Vec::new(), label: None, block: input.parse()? }));
        } else {
            exprs.push(input.parse()?);
        }
        if input.peek(syn::Token![,]) {
            input.parse::<syn::Token![,]>()?;
        }
    }
    Ok(exprs)
}

fn span_key(span: proc_macro2::Span) -> (usize, usize) {
    (span.start().line, span.start().column)
}

fn text(expr: &Expr) -> String {
    expr.to_token_stream().to_string().replace(' ', "")
}

/// The subresource and verbs of a request.
type Request = (Option<&'static str>, Vec<&'static str>);

/// The request an `Api` method makes; `None` for methods that make none, `Err` for unknown ones.
fn verbs(method: &str, args: &[&Expr]) -> Result<Option<Request>, ()> {
    Ok(Some(match method {
        "clone" | "resource_url" | "namespace" | "into_client" => return Ok(None),
        "get"
        | "get_opt"
        | "get_with"
        | "get_metadata"
        | "get_metadata_opt"
        | "get_metadata_with"
        | "get_metadata_opt_with" => (None, vec!["get"]),
        "list" | "list_metadata" => (None, vec!["list"]),
        "watch" | "watch_metadata" => (None, vec!["watch"]),
        "create" => (None, vec!["create"]),
        "replace" => (None, vec!["update"]),
        "delete" => (None, vec!["delete"]),
        "delete_collection" => (None, vec!["deletecollection"]),
        // A server-side apply creates the object when it is missing, which the apiserver
        // authorizes as a create; a patch of unknown type is taken to be one.
        "patch" | "patch_metadata" => match args.get(2).map(|a| text(a)) {
            Some(p) if p.contains("Patch::Merge") || p.contains("Patch::Json") || p.contains("Patch::Strategic") => {
                (None, vec!["patch"])
            }
            _ => (None, vec!["create", "patch"]),
        },
        "get_status" => (Some("status"), vec!["get"]),
        "patch_status" => (Some("status"), vec!["patch"]),
        "replace_status" => (Some("status"), vec!["update"]),
        _ => return Err(()),
    }))
}

impl Scanner<'_> {
    fn lookup(&self, name: &str) -> Option<&Binding> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn bind(&mut self, name: String, binding: Binding) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name, binding);
        }
    }

    /// The kind (and dynamic resource) of an expression that is an `Api`, if it is one.
    fn api_of(&self, expr: &Expr) -> Option<(String, Option<String>)> {
        match expr {
            Expr::Path(p) => match self.lookup(&p.path.get_ident()?.to_string())? {
                Binding::Api { kind, dynamic } => Some((kind.clone(), dynamic.clone())),
                Binding::Value(_) => None,
            },
            Expr::Reference(r) => self.api_of(&r.expr),
            Expr::Paren(p) => self.api_of(&p.expr),
            Expr::MethodCall(m) if m.method == "clone" => self.api_of(&m.receiver),
            Expr::Field(f) => match &f.member {
                syn::Member::Named(name) => self.fields.get(&name.to_string()).map(|k| (k.clone(), None)),
                syn::Member::Unnamed(_) => None,
            },
            Expr::Call(c) => {
                let Expr::Path(p) = &*c.func else { return None };
                let (_, dynamic) = constructor(&p.path)?;
                let segments: Vec<&syn::PathSegment> = p.path.segments.iter().collect();
                let api = segments.get(segments.len().checked_sub(2)?)?;
                let kind = kind_name(first_type_arg(&api.arguments)?);
                let dynamic = if dynamic { self.resource_text(c.args.iter().nth(1)) } else { None };
                Some((kind, dynamic))
            }
            _ => None,
        }
    }

    /// The expression giving a dynamic API's resource, through one `let`.
    fn resource_text(&self, arg: Option<&Expr>) -> Option<String> {
        let mut expr = arg?;
        while let Expr::Reference(r) = expr {
            expr = &r.expr;
        }
        if let Expr::Path(p) = expr
            && let Some(ident) = p.path.get_ident()
            && let Some(Binding::Value(init)) = self.lookup(&ident.to_string())
        {
            return Some(init.clone());
        }
        Some(text(expr))
    }

    fn names_api(&self, tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Group(g) => self.names_api(g.stream()),
            proc_macro2::TokenTree::Ident(i) => {
                let name = i.to_string();
                ["Api", "watcher", "metadata_watcher", "Recorder"].contains(&name.as_str())
                    || matches!(self.lookup(&name), Some(Binding::Api { .. }))
            }
            _ => false,
        })
    }

    fn record(
        &mut self,
        kind: String,
        dynamic: Option<String>,
        subresource: Option<&'static str>,
        verbs: Vec<&'static str>,
        span: proc_macro2::Span,
    ) {
        self.calls.push(Call { kind, dynamic, subresource, verbs, at: at(self.path, span) });
    }

    fn bind_pattern(&mut self, pat: &Pat, ty: Option<&Type>, init: Option<&Expr>) {
        match pat {
            Pat::Type(t) => self.bind_pattern(&t.pat, Some(&t.ty), init),
            Pat::Ident(i) => {
                let name = i.ident.to_string();
                if let Some(kind) = ty.and_then(api_kind) {
                    let dynamic = init.and_then(|e| self.api_of(e)).and_then(|(_, d)| d);
                    self.bind(name, Binding::Api { kind, dynamic });
                } else if let Some((kind, dynamic)) = init.and_then(|e| self.api_of(e)) {
                    self.bind(name, Binding::Api { kind, dynamic });
                } else if let Some(init) = init {
                    self.bind(name, Binding::Value(text(init)));
                }
            }
            Pat::Tuple(t) => {
                let inits: Vec<Option<&Expr>> = match init {
                    Some(Expr::Tuple(e)) => e.elems.iter().map(Some).collect(),
                    _ => vec![None; t.elems.len()],
                };
                for (p, i) in t.elems.iter().zip(inits) {
                    self.bind_pattern(p, None, i);
                }
            }
            _ => {}
        }
    }

    fn bind_params<'p>(&mut self, inputs: impl Iterator<Item = &'p syn::FnArg>) {
        for input in inputs {
            if let syn::FnArg::Typed(t) = input {
                self.bind_pattern(&t.pat, Some(&t.ty), None);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_item_mod(&mut self, m: &'ast ItemMod) {
        if !is_test(&m.attrs) {
            visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast ItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        self.scopes.push(HashMap::new());
        self.bind_params(f.sig.inputs.iter());
        visit::visit_item_fn(self, f);
        self.scopes.pop();
    }

    fn visit_impl_item_fn(&mut self, f: &'ast ImplItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        self.scopes.push(HashMap::new());
        self.bind_params(f.sig.inputs.iter());
        visit::visit_impl_item_fn(self, f);
        self.scopes.pop();
    }

    fn visit_local(&mut self, local: &'ast Local) {
        let init = local.init.as_ref().map(|i| &*i.expr);
        let ty = match &local.pat {
            Pat::Type(t) => Some(&*t.ty),
            _ => None,
        };
        if let (Some(kind), Some(Expr::Call(call))) = (ty.and_then(api_kind), init)
            && let Expr::Path(p) = &*call.func
            && let Some((namespaced, _)) = constructor(&p.path)
        {
            self.typed_constructors.insert(span_key(p.path.segments[0].ident.span()));
            self.constructions.push((kind, namespaced));
        }
        if let Some(init) = init {
            self.visit_expr(init);
        }
        if let Some(init) = &local.init
            && let Some((_, diverge)) = &init.diverge
        {
            self.visit_expr(diverge);
        }
        self.bind_pattern(&local.pat, None, init);
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let Expr::Path(p) = &*call.func {
            let path = &p.path;
            let last = path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            let span = path.segments[0].ident.span();
            if let Some((namespaced, _)) = constructor(path) {
                match self.api_of(&Expr::Call(call.clone())) {
                    Some((kind, _)) => self.constructions.push((kind, namespaced)),
                    None if self.typed_constructors.contains(&span_key(span)) => {}
                    None => self.errors.push(format!(
                        "{}: cannot tell the kind of this Api; write Api::<T>:: or annotate the let",
                        at(self.path, span)
                    )),
                }
            } else if last == "watcher" || last == "metadata_watcher" {
                match call.args.first().and_then(|a| self.api_of(a)) {
                    Some((kind, dynamic)) => self.record(kind, dynamic, None, vec!["list", "watch"], span),
                    None => {
                        self.errors.push(format!("{}: cannot tell which Api this watcher watches", at(self.path, span)))
                    }
                }
            } else if path.segments.len() >= 2
                && path.segments[path.segments.len() - 2].ident == "Recorder"
                && last == "new"
            {
                // kube's Recorder publishes events.k8s.io/v1 Events, creating or patching a series,
                // in the namespace of each object it reports on.
                self.record("Event".into(), None, None, vec!["create", "patch"], span);
            } else if call.args.iter().any(|a| self.api_of(a).is_some()) && !self.known_fns.contains(&last) {
                self.errors.push(format!(
                    "{}: an Api is passed to {last}, which is not in the scanned code, so its requests are unknown",
                    at(self.path, span)
                ));
            }
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // A macro body is only tokens: read it as expressions where it is made of them (join!,
        // vec!, format!); any other body that names an Api, a watcher or a Recorder is an error.
        let parser = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
        let parsed = mac
            .parse_body_with(parser)
            .map(|p| p.into_iter().collect())
            .or_else(|_| mac.parse_body_with(select_branches));
        match parsed {
            Ok(exprs) => exprs.iter().for_each(|e| self.visit_expr(e)),
            Err(_) if self.names_api(mac.tokens.clone()) => self.errors.push(format!(
                "{}: a {}! whose body the scanner cannot read uses an Api",
                at(self.path, mac.path.segments[0].ident.span()),
                mac.path.to_token_stream()
            )),
            Err(_) => {}
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let method = call.method.to_string();
        let span = call.method.span();
        if method.starts_with("request") && method != "request" {
            self.errors
                .push(format!("{}: raw client request {method}: its RBAC cannot be derived", at(self.path, span)));
        }
        if let Some((kind, dynamic)) = self.api_of(&call.receiver) {
            let args: Vec<&Expr> = call.args.iter().collect();
            match verbs(&method, &args) {
                Ok(Some((subresource, verbs))) => self.record(kind, dynamic, subresource, verbs, span),
                Ok(None) => {}
                Err(()) => self.errors.push(format!(
                    "{}: Api::{method} is not a method the scanner knows the verbs of",
                    at(self.path, span)
                )),
            }
        } else if call.args.iter().any(|a| self.api_of(a).is_some()) && !self.known_fns.contains(&method) {
            self.errors.push(format!(
                "{}: an Api is passed to {method}, which is not in the scanned code, so its requests are unknown",
                at(self.path, span)
            ));
        }
        visit::visit_expr_method_call(self, call);
    }
}
