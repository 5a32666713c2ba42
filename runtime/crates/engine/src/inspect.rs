//! The cheap look at an upload before anything compiles it: one pass of the binary
//! parser over the component and every module nested in it (linear time, no
//! allocation per function), refusing what Sluice would refuse anyway — an import it
//! does not provide, a missing handler export — and what would cost too much to compile
//! ([`LoadError::TooComplex`]): too many functions, too much code, oversized function
//! bodies or local counts, too much data, too deep a nesting.
//!
//! Compiling is the expensive step (cranelift's time and memory grow with functions,
//! code and locals); these bounds make the worst upload within the size limit cost a
//! few seconds of one core, measured in BENCHMARKS.md.

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload};

use super::LoadError;

/// Bounds on what an upload may contain, checked before it is compiled. The `[engine.
/// complexity]` table of the configuration file; each field's default is in its doc.
///
/// Compiling costs one to two seconds of one core per MiB of code on the machine of
/// BENCHMARKS.md (`sluice bench upload-bomb`), more for large function bodies, and
/// uploads compile one per org at a time on at most half the node's cores. The defaults
/// admit the language runtimes of plain componentize-py (13,400 functions, 6.3 MiB of
/// code, largest body 417 KiB: 9 s to compile) and componentize-js (12,700 functions,
/// 8.8 MiB: 11 s) builds; the worst upload within them measured 22 s of one core and
/// 373 MB, paid once (accepted plug-ins are cached compiled). An operator whose tenants
/// write only Rust can lower them (Rust plug-ins hold well under 1 MiB of code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Complexity {
    /// Functions defined across all of the component's core modules. Default 50,000.
    pub max_functions: u32,
    /// Bytes of function bodies across all modules. Default 10 MiB.
    pub max_code_bytes: u64,
    /// Bytes of one function body. Default 512 KiB (CPython's interpreter loop is 417 KiB).
    pub max_function_bytes: u32,
    /// Locals of one function. Default 50,000.
    pub max_locals: u32,
    /// Bytes of data segments across all modules. Default 32 MiB.
    pub max_data_bytes: u64,
    /// Core modules and components nested inside the component. Default 64.
    pub max_modules: u32,
    /// Depth of components nested in components. Default 4.
    pub max_nesting: u32,
}

impl Default for Complexity {
    fn default() -> Self {
        Complexity {
            max_functions: 50_000,
            max_code_bytes: 10 << 20,
            max_function_bytes: 512 << 10,
            max_locals: 50_000,
            max_data_bytes: 32 << 20,
            max_modules: 64,
            max_nesting: 4,
        }
    }
}

/// What the look found: the component's own imports and exports, and its size in the
/// terms of [`Complexity`].
#[derive(Debug, Default)]
pub(crate) struct Shape {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub totals: Totals,
}

/// What an upload holds, measured against [`Complexity`] (`sluice plugin check` shows it,
/// so an author sees how near a limit a plug-in is).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    pub functions: u64,
    pub code_bytes: u64,
    pub largest_function_bytes: u64,
    pub most_locals: u64,
    pub data_bytes: u64,
    pub modules: u64,
}

fn too_complex(what: String) -> LoadError {
    LoadError::TooComplex { what }
}

fn malformed(e: wasmparser::BinaryReaderError) -> LoadError {
    LoadError::Malformed { reason: e.to_string() }
}

/// Reads the component once and checks it against `limits`.
pub(crate) fn inspect(bytes: &[u8], limits: &Complexity) -> Result<Shape, LoadError> {
    let mut shape = Shape::default();
    let totals = &mut shape.totals;
    // Nesting: true for a component, false for a core module, outermost first.
    let mut open: Vec<bool> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(malformed)?;
        let top_level = open.len() == 1;
        match payload {
            Payload::Version { encoding, .. } => {
                open.push(encoding == wasmparser::Encoding::Component);
                if open.len() > 1 {
                    totals.modules += 1;
                    if totals.modules > u64::from(limits.max_modules) {
                        return Err(too_complex(format!("more than {} nested modules", limits.max_modules)));
                    }
                }
                let components = open.iter().filter(|c| **c).count() as u32;
                if components > limits.max_nesting + 1 {
                    return Err(too_complex(format!("components nested over {} deep", limits.max_nesting)));
                }
            }
            Payload::End(_) => {
                open.pop();
            }
            Payload::ComponentImportSection(reader) if top_level => {
                for import in reader {
                    shape.imports.push(import.map_err(malformed)?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if top_level => {
                for export in reader {
                    shape.exports.push(export.map_err(malformed)?.name.name.to_owned());
                }
            }
            Payload::CodeSectionStart { count, size, .. } => {
                totals.functions += u64::from(count);
                totals.code_bytes += u64::from(size);
                if totals.functions > u64::from(limits.max_functions) {
                    return Err(too_complex(format!("more than {} functions", limits.max_functions)));
                }
                if totals.code_bytes > limits.max_code_bytes {
                    return Err(too_complex(format!("more than {} bytes of code", limits.max_code_bytes)));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                totals.largest_function_bytes = totals.largest_function_bytes.max(size as u64);
                if size > limits.max_function_bytes as usize {
                    return Err(too_complex(format!(
                        "a function of {size} bytes (the limit is {})",
                        limits.max_function_bytes
                    )));
                }
                let mut locals = body.get_locals_reader().map_err(malformed)?;
                let mut count: u64 = 0;
                for _ in 0..locals.get_count() {
                    count += u64::from(locals.read().map_err(malformed)?.0);
                    if count > u64::from(limits.max_locals) {
                        return Err(too_complex(format!(
                            "a function with more than {} locals",
                            limits.max_locals
                        )));
                    }
                }
                totals.most_locals = totals.most_locals.max(count);
            }
            Payload::DataSection(reader) => {
                totals.data_bytes += reader.range().len() as u64;
                if totals.data_bytes > limits.max_data_bytes {
                    return Err(too_complex(format!("more than {} bytes of data", limits.max_data_bytes)));
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component_with_functions(n: usize, locals: u32) -> Vec<u8> {
        let functions = format!("(func (local {}))", "i32 ".repeat(locals as usize)).repeat(n);
        wat::parse_str(format!("(component (core module {functions}))")).unwrap()
    }

    #[test]
    fn counts_functions_and_locals_of_nested_modules() {
        let limits = Complexity { max_functions: 10, max_locals: 5, ..Complexity::default() };
        assert!(inspect(&component_with_functions(10, 5), &limits).is_ok());
        let too_many = inspect(&component_with_functions(11, 0), &limits).unwrap_err();
        assert!(matches!(too_many, LoadError::TooComplex { .. }), "{too_many}");
        let too_wide = inspect(&component_with_functions(1, 6), &limits).unwrap_err();
        assert!(too_wide.to_string().contains("locals"), "{too_wide}");
    }

    #[test]
    fn reads_the_top_level_imports_and_exports_only() {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdin@0.2.0" (instance))
                (component (import "inner" (instance)))
                (instance $i)
                (export "sluice:plugin/handler@0.1.0" (instance $i)))"#,
        )
        .unwrap();
        let shape = inspect(&bytes, &Complexity::default()).unwrap();
        assert_eq!(shape.imports, ["wasi:cli/stdin@0.2.0"]);
        assert_eq!(shape.exports, ["sluice:plugin/handler@0.1.0"]);
    }
}
