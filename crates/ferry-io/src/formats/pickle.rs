//! ferry's own restricted pickle virtual machine (protocols 0 to 5).
//!
//! It never imports or calls anything. `GLOBAL`/`STACK_GLOBAL` resolve against a small
//! allow-list (tensor rebuild functions, storage classes, dtypes, `OrderedDict`, sets...);
//! any other global stops the load with [`Error::UnsafePickle`] at that opcode, before
//! anything else happens. Calls (`REDUCE`, `NEWOBJ`, `BUILD`) of allowed globals are not
//! evaluated either: they are recorded as [`Call`] objects for the caller (the PyTorch reader)
//! to interpret, except for a few pure containers (`OrderedDict()`, `set(...)`, `torch.Size`,
//! `_codecs.encode`) that are built directly.
//!
//! Everything is bounded: strings are checked against the remaining bytes before they are
//! sliced, each opcode adds at most one object, truncated input gives a
//! [`crate::FileProblem::Malformed`] error naming the file and the byte offset, and the bytes of values built (containers, the copies
//! calls make of their arguments, encoded strings) count against the pickle memory budget
//! ([`crate::budget::PICKLE`]), so a kilobyte of memo references cannot build gigabytes.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use crate::budget::Meter;
use crate::error::{Error, Result};

/// Index of an object in [`Pickle::objects`].
pub type ObjId = usize;

/// Upper bound on the value stack, the memo and the object arena (each opcode adds at most
/// one entry, so the input length bounds them too; this caps what a huge input can build).
const MAX_ITEMS: usize = 1 << 26;

/// A pickled value. Mutable containers and calls live in the [`Pickle`]'s arena and are
/// referenced by [`Value::Ref`], so that memoized objects mutated later (`SETITEMS` after
/// `BINPUT`, `BUILD` after `BINPUT`) are seen the same way from every reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Value {
    /// `None`.
    #[default]
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer too wide for 64 bits: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(Rc<str>),
    /// A byte string (`bytes`, `bytearray`, or a protocol-0/1 `str` that is not UTF-8).
    Bytes(Rc<[u8]>),
    /// An object of the arena.
    Ref(ObjId),
}

/// A global reference (`module name`) that passed the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Module, normalised to Python 3 names (`builtins`, `copyreg`).
    pub module: String,
    /// Attribute name.
    pub name: String,
}

impl Global {
    /// Whether this is `module.name`.
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }

    /// `module.name`.
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// A call of an allowed global that ferry recorded instead of running.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The callable (a function or a class).
    pub func: Global,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// What `BUILD` set on the result (`__setstate__` state), if anything.
    pub state: Option<Value>,
}

/// A hashable form of simple dictionary keys, to replace values on repeated keys quickly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Bool(bool),
    Int(i64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
}

fn key_of(v: &Value) -> Option<Key> {
    Some(match v {
        Value::None => Key::None,
        Value::Bool(b) => Key::Bool(*b),
        Value::Int(i) => Key::Int(*i),
        Value::Str(s) => Key::Str(s.clone()),
        Value::Bytes(b) => Key::Bytes(b.clone()),
        _ => return None,
    })
}

/// An insertion-ordered dictionary (plain `dict` and `OrderedDict` alike).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dict {
    /// Items in insertion order; a repeated key keeps its first position and its last value.
    pub items: Vec<(Value, Value)>,
    index: HashMap<Key, usize>,
}

impl Dict {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: Value, value: Value) {
        match key_of(&key) {
            Some(k) => match self.index.get(&k) {
                Some(&i) => self.items[i].1 = value,
                None => {
                    self.index.insert(k, self.items.len());
                    self.items.push((key, value));
                }
            },
            None => self.items.push((key, value)),
        }
    }

    /// The value of the string key `key`.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.index
            .get(&Key::Str(Rc::from(key)))
            .map(|&i| &self.items[i].1)
    }
}

/// An object of the arena.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A `dict` or `OrderedDict`.
    Dict(Dict),
    /// A `set` or `frozenset`.
    Set(Vec<Value>),
    /// An allowed global, not yet called.
    Global(Global),
    /// A recorded call of an allowed global.
    Call(Call),
    /// The result of `persistent_load(pid)`: the caller resolves the id.
    PersistentId(Value),
}

/// Which globals beyond the plain `torch.save` set are allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Allow TorchScript classes (`__torch__.*`, kept as opaque [`Call`]s with their `BUILD`
    /// state) and the `torch.jit._pickle` list builders.
    pub torchscript: bool,
}

/// The result of unpickling: the root value and the arena it refers to.
#[derive(Debug, Clone, Default)]
pub struct Pickle {
    /// The value `STOP` returned.
    pub root: Value,
    /// Every container, global and call built along the way.
    pub objects: Vec<Object>,
}

impl Pickle {
    /// The arena object `v` refers to.
    pub fn obj(&self, v: &Value) -> Option<&Object> {
        match v {
            Value::Ref(i) => self.objects.get(*i),
            _ => None,
        }
    }

    /// The string inside `v`.
    pub fn str<'a>(&self, v: &'a Value) -> Option<&'a str> {
        match v {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items<'a>(&'a self, v: &Value) -> Option<&'a [Value]> {
        match self.obj(v)? {
            Object::Tuple(t) | Object::List(t) => Some(t),
            _ => None,
        }
    }

    /// The dictionary `v` refers to.
    pub fn dict(&self, v: &Value) -> Option<&Dict> {
        match self.obj(v)? {
            Object::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The global `v` refers to.
    pub fn global(&self, v: &Value) -> Option<&Global> {
        match self.obj(v)? {
            Object::Global(g) => Some(g),
            _ => None,
        }
    }

    /// The call `v` refers to.
    pub fn call(&self, v: &Value) -> Option<&Call> {
        match self.obj(v)? {
            Object::Call(c) => Some(c),
            _ => None,
        }
    }
}

/// Maps Python 2 module names to their Python 3 names, as `pickle` does on loading.
fn normalize_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        other => other,
    }
}

/// Storage classes of `torch` (the legacy typed storages, including those ferry later refuses
/// with a clear message, like complex and quantized ones).
const TORCH_STORAGES: &[&str] = &[
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexFloatStorage",
    "ComplexDoubleStorage",
    "QInt8Storage",
    "QUInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
];

/// `torch` dtype objects that can appear as values (storage types of new-style ids,
/// `_rebuild_tensor_v3` arguments).
const TORCH_DTYPES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "bool",
    "uint16",
    "uint32",
    "uint64",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "chalf",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits8",
    "bits16",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
];

/// Whether `module.name` (module already normalised) may be referenced.
fn allowed(module: &str, name: &str, opts: &Options) -> bool {
    match module {
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch" => {
            TORCH_STORAGES.contains(&name)
                || TORCH_DTYPES.contains(&name)
                || matches!(name, "Size" | "device" | "Tensor")
        }
        "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage"),
        "torch.nn.parameter" => name == "Parameter",
        "collections" => name == "OrderedDict",
        "builtins" => matches!(name, "set" | "frozenset" | "slice" | "object"),
        "copyreg" => name == "_reconstructor",
        "_codecs" => name == "encode",
        "numpy" => name == "dtype",
        "numpy.core.multiarray" | "numpy._core.multiarray" => name == "scalar",
        "torch.jit._pickle" => {
            opts.torchscript
                && matches!(
                    name,
                    "build_intlist"
                        | "build_tensorlist"
                        | "build_doublelist"
                        | "build_boollist"
                        | "restore_type_tag"
                )
        }
        m => opts.torchscript && (m == "__torch__" || m.starts_with("__torch__.")),
    }
}

/// Unpickles one pickle from the start of `data`; returns it and the number of bytes it took
/// (pickles can follow one another, as in legacy `torch.save` files).
pub fn load(path: &Path, data: &[u8], opts: &Options) -> Result<(Pickle, usize)> {
    let mut vm = Vm {
        path,
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
        opts: *opts,
        built: Meter::new(crate::budget::PICKLE),
    };
    let root = vm.run()?;
    Ok((
        Pickle {
            root,
            objects: vm.objects,
        },
        vm.pos,
    ))
}

struct Vm<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objects: Vec<Object>,
    opts: Options,
    /// Bytes of values built so far, against the pickle budget.
    built: Meter,
}

/// Bytes an object holds beyond its slot in the arena (its items and strings).
fn object_bytes(o: &Object) -> u64 {
    let value = std::mem::size_of::<Value>() as u64;
    std::mem::size_of::<Object>() as u64
        + match o {
            Object::Tuple(v) | Object::List(v) | Object::Set(v) => v.len() as u64 * value,
            Object::Dict(d) => d.items.len() as u64 * 3 * value,
            Object::Global(g) => (g.module.len() + g.name.len()) as u64,
            Object::Call(c) => c.args.len() as u64 * value,
            Object::PersistentId(_) => value,
        }
}

impl<'a> Vm<'a> {
    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::malformed(
            self.path,
            format!("pickle: {msg} (opcode at byte {})", self.op_at),
        )
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.bad(format!(
                "needs {n} more bytes but only {left} remain (truncated)"
            )));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A newline-terminated argument of the text opcodes (without the newline).
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.bad("a text argument has no newline (truncated)"))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn line_str(&mut self) -> Result<&'a str> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.bad("a text argument is not ASCII"))
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_ITEMS {
            return Err(self.bad("value stack too deep"));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Counts `bytes` more of values built against the pickle memory budget.
    fn charge(&mut self, bytes: u64) -> Result<()> {
        let at = self.op_at;
        self.built.charge(bytes, self.path, || {
            format!("the values this pickle builds (containers and the copies its calls make; at byte {at})")
        })
    }

    fn new_obj(&mut self, o: Object) -> Result<Value> {
        if self.objects.len() >= MAX_ITEMS {
            return Err(self.bad("too many objects"));
        }
        self.charge(object_bytes(&o))?;
        self.objects.push(o);
        Ok(Value::Ref(self.objects.len() - 1))
    }

    fn push_obj(&mut self, o: Object) -> Result<()> {
        let v = self.new_obj(o)?;
        self.push(v)
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&self) -> Result<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.bad("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.bad("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_ITEMS && !self.memo.contains_key(&idx) {
            return Err(self.bad("memo too large"));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.bad(format!("memo key {idx} was never stored")))?;
        self.push(v)
    }

    fn obj_mut(&mut self, v: &Value) -> Option<&mut Object> {
        match v {
            Value::Ref(i) => self.objects.get_mut(*i),
            _ => None,
        }
    }

    /// Resolves `module name` against the allow-list and pushes it.
    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        let norm = normalize_module(module);
        if !allowed(norm, name, &self.opts) {
            return Err(Error::UnsafePickle {
                path: self.path.to_path_buf(),
                global: format!("{module} {name}"),
            });
        }
        self.push_obj(Object::Global(Global {
            module: norm.to_string(),
            name: name.to_string(),
        }))
    }

    fn text(&self, b: &[u8]) -> Value {
        match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Bytes(Rc::from(b)),
        }
    }

    fn utf8(&self, b: &[u8]) -> Result<Value> {
        std::str::from_utf8(b)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| self.bad("a unicode string is not valid UTF-8"))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            if op == b'.' {
                let v = self.pop()?;
                return Ok(v);
            }
            self.step(op)?;
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(self.bad(format!("pickle protocol {p} is newer than 5")));
                }
            }
            0x95 => {
                self.u64()?; // FRAME: a length hint only
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(v.into()))?
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v.into()))?
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v.into()))?
            }
            0x8a => {
                let n = self.u8()? as u64;
                self.long(n)?
            }
            0x8b => {
                let n = self.u32()? as u64;
                self.long(n)?
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))?
            }
            0x8c => {
                let n = self.u8()? as u64;
                let b = self.take(n)?;
                let v = self.utf8(b)?;
                self.push(v)?
            }
            b'X' => {
                let n = self.u32()? as u64;
                let b = self.take(n)?;
                let v = self.utf8(b)?;
                self.push(v)?
            }
            0x8d => {
                let n = self.u64()?;
                let b = self.take(n)?;
                let v = self.utf8(b)?;
                self.push(v)?
            }
            b'C' => {
                let n = self.u8()? as u64;
                self.bytes(n)?
            }
            b'B' => {
                let n = self.u32()? as u64;
                self.bytes(n)?
            }
            0x8e | 0x96 => {
                let n = self.u64()?;
                self.bytes(n)?
            }
            b'U' => {
                let n = self.u8()? as u64;
                let b = self.take(n)?;
                let v = self.text(b);
                self.push(v)?
            }
            b'T' => {
                let n = i32::from_le_bytes(self.array()?);
                let n = u64::try_from(n).map_err(|_| self.bad("negative string length"))?;
                let b = self.take(n)?;
                let v = self.text(b);
                self.push(v)?
            }
            _ => self.step_text_or_struct(op)?,
        }
        Ok(())
    }

    fn long(&mut self, n: u64) -> Result<()> {
        let b = self.take(n)?;
        let v = le_to_int(b);
        self.push(v)
    }

    fn bytes(&mut self, n: u64) -> Result<()> {
        let b = self.take(n)?;
        self.push(Value::Bytes(Rc::from(b)))
    }

    /// Protocol 0/1 text opcodes and the structural ones.
    fn step_text_or_struct(&mut self, op: u8) -> Result<()> {
        match op {
            b'I' => {
                let s = self.line_str()?;
                let v = match s {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    s => parse_decimal(s).ok_or_else(|| self.bad(format!("bad INT `{s}`")))?,
                };
                self.push(v)?
            }
            b'L' => {
                let s = self.line_str()?;
                let v = parse_decimal(s.trim_end_matches('L'))
                    .ok_or_else(|| self.bad(format!("bad LONG `{s}`")))?;
                self.push(v)?
            }
            b'F' => {
                let s = self.line_str()?;
                let v: f64 = s
                    .trim()
                    .parse()
                    .map_err(|_| self.bad(format!("bad FLOAT `{s}`")))?;
                self.push(Value::Float(v))?
            }
            b'S' => {
                let l = self.line()?;
                let raw = unquote(l).ok_or_else(|| self.bad("bad STRING literal"))?;
                let v = self.text(&raw);
                self.push(v)?
            }
            b'V' => {
                let l = self.line()?;
                let s = raw_unicode_unescape(l).ok_or_else(|| self.bad("bad UNICODE literal"))?;
                self.push(Value::Str(Rc::from(s.as_str())))?
            }
            b'P' => {
                let l = self.line()?;
                let id = self.text(l);
                self.push_obj(Object::PersistentId(id))?
            }
            b'Q' => {
                let id = self.pop()?;
                self.push_obj(Object::PersistentId(id))?
            }
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                self.global(module, name)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                    _ => return Err(self.bad("STACK_GLOBAL needs two strings")),
                }
            }
            _ => self.step_memo_or_container(op)?,
        }
        Ok(())
    }

    fn step_memo_or_container(&mut self, op: u8) -> Result<()> {
        match op {
            b'q' => {
                let i = self.u8()? as u64;
                self.memo_put(i)?
            }
            b'r' => {
                let i = self.u32()? as u64;
                self.memo_put(i)?
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.memo_put(i)?
            }
            b'p' => {
                let s = self.line_str()?;
                let i = s
                    .parse()
                    .map_err(|_| self.bad(format!("bad PUT index `{s}`")))?;
                self.memo_put(i)?
            }
            b'h' => {
                let i = self.u8()? as u64;
                self.memo_get(i)?
            }
            b'j' => {
                let i = self.u32()? as u64;
                self.memo_get(i)?
            }
            b'g' => {
                let s = self.line_str()?;
                let i = s
                    .parse()
                    .map_err(|_| self.bad(format!("bad GET index `{s}`")))?;
                self.memo_get(i)?
            }
            b'0' => {
                if self.stack.len() > self.marks.last().copied().unwrap_or(0) {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)?
            }
            b')' => self.push_obj(Object::Tuple(Vec::new()))?,
            b']' => self.push_obj(Object::List(Vec::new()))?,
            b'}' => self.push_obj(Object::Dict(Dict::default()))?,
            0x8f => self.push_obj(Object::Set(Vec::new()))?,
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push_obj(Object::Tuple(items))?
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::Tuple(items))?
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::List(items))?
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_obj(Object::Set(items))?
            }
            b'd' => {
                let items = self.pop_mark()?;
                let d = self.pairs_to_dict(items)?;
                self.push_obj(Object::Dict(d))?
            }
            _ => self.step_mutate_or_call(op)?,
        }
        Ok(())
    }

    fn pairs_to_dict(&self, items: Vec<Value>) -> Result<Dict> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("odd number of items for a dict"));
        }
        let mut d = Dict::default();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(d)
    }

    fn step_mutate_or_call(&mut self, op: u8) -> Result<()> {
        match op {
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?
            }
            0x90 => {
                let items = self.pop_mark()?;
                self.charge(items.len() as u64 * std::mem::size_of::<Value>() as u64)?;
                let target = self.top()?.clone();
                match self.obj_mut(&target) {
                    Some(Object::Set(s)) => s.extend(items),
                    _ => return Err(self.bad("ADDITEMS on something that is not a set")),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let args = self.tuple_items(&args, "REDUCE")?;
                self.call(&func, args)?
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(&args, "NEWOBJ")?;
                self.call(&cls, args)?
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(&args, "NEWOBJ_EX")?;
                self.call(&cls, args)?
            }
            b'o' => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.bad("OBJ without a class"));
                }
                let cls = items.remove(0);
                self.call(&cls, items)?
            }
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let args = self.pop_mark()?;
                self.global(module, name)?;
                let cls = self.pop()?;
                self.call(&cls, args)?
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                self.build(&target, state)?
            }
            0x82..=0x84 => {
                return Err(Error::UnsafePickle {
                    path: self.path.to_path_buf(),
                    global: "copyreg extension registry (EXT opcode)".into(),
                })
            }
            0x97 | 0x98 => {
                return Err(self.bad("out-of-band buffers (protocol 5) are not supported"))
            }
            other => return Err(self.bad(format!("unknown opcode 0x{other:02x}"))),
        }
        Ok(())
    }

    fn tuple_items(&self, v: &Value, what: &str) -> Result<Vec<Value>> {
        match v {
            Value::Ref(i) => match self.objects.get(*i) {
                Some(Object::Tuple(t)) => Ok(t.clone()),
                _ => Err(self.bad(format!("{what} arguments are not a tuple"))),
            },
            _ => Err(self.bad(format!("{what} arguments are not a tuple"))),
        }
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge(items.len() as u64 * std::mem::size_of::<Value>() as u64)?;
        let target = self.top()?.clone();
        match self.obj_mut(&target) {
            Some(Object::List(l)) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.bad("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge(items.len() as u64 * 2 * std::mem::size_of::<Value>() as u64)?;
        let d = self.pairs_to_dict(items)?;
        let target = self.top()?.clone();
        match self.obj_mut(&target) {
            Some(Object::Dict(t)) => {
                for (k, v) in d.items {
                    t.insert(k, v);
                }
                Ok(())
            }
            _ => Err(self.bad("SETITEM on something that is not a dict")),
        }
    }

    /// `BUILD`: records the state on calls; ignores it on containers (for an `OrderedDict`
    /// it is the `_metadata` attribute of a state dict, which holds no tensors).
    fn build(&mut self, target: &Value, state: Value) -> Result<()> {
        match self.obj_mut(target) {
            Some(Object::Call(c)) => {
                c.state = Some(state);
                Ok(())
            }
            Some(Object::Dict(_)) | Some(Object::List(_)) | Some(Object::Set(_)) => Ok(()),
            _ => Err(self.bad("BUILD on something that is not an object")),
        }
    }

    /// `REDUCE`/`NEWOBJ` of `func(*args)`: builds pure containers, records everything else.
    fn call(&mut self, func: &Value, args: Vec<Value>) -> Result<()> {
        let g = match self.obj_mut(func) {
            Some(Object::Global(g)) => g.clone(),
            _ => return Err(self.bad("a call of something that is not an allowed global")),
        };
        let built = match (g.module.as_str(), g.name.as_str()) {
            ("collections", "OrderedDict") => Some(self.dict_from_args(&args)?),
            ("builtins", "set" | "frozenset") => Some(Object::Set(self.first_items(&args))),
            ("torch", "Size") => Some(Object::Tuple(self.first_items(&args))),
            ("torch.jit._pickle", _) => {
                // `build_*list(list)` and `restore_type_tag(value, type)`: the value itself.
                let v = args.into_iter().next().unwrap_or(Value::None);
                return self.push(v);
            }
            ("_codecs", "encode") => return self.codecs_encode(&args),
            ("copyreg", "_reconstructor") => {
                let cls = args
                    .first()
                    .and_then(|c| match c {
                        Value::Ref(i) => match self.objects.get(*i) {
                            Some(Object::Global(g)) => Some(g.clone()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .ok_or_else(|| self.bad("_reconstructor of something that is not a class"))?;
                Some(Object::Call(Call {
                    func: cls,
                    args: Vec::new(),
                    state: None,
                }))
            }
            _ => None,
        };
        let obj = built.unwrap_or(Object::Call(Call {
            func: g,
            args,
            state: None,
        }));
        self.push_obj(obj)
    }

    /// The items of the first argument when it is a tuple, list or set.
    fn first_items(&self, args: &[Value]) -> Vec<Value> {
        match args.first() {
            Some(Value::Ref(i)) => match self.objects.get(*i) {
                Some(Object::Tuple(t)) | Some(Object::List(t)) | Some(Object::Set(t)) => t.clone(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn dict_from_args(&self, args: &[Value]) -> Result<Object> {
        let mut d = Dict::default();
        for pair in self.first_items(args) {
            let kv = match &pair {
                Value::Ref(i) => match self.objects.get(*i) {
                    Some(Object::Tuple(t)) | Some(Object::List(t)) if t.len() == 2 => t.clone(),
                    _ => return Err(self.bad("OrderedDict item is not a pair")),
                },
                _ => return Err(self.bad("OrderedDict item is not a pair")),
            };
            let mut kv = kv.into_iter();
            if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                d.insert(k, v);
            }
        }
        Ok(Object::Dict(d))
    }

    /// `_codecs.encode(text, 'latin1')`: how protocol 2 pickles `bytes`.
    fn codecs_encode(&mut self, args: &[Value]) -> Result<()> {
        let (Some(Value::Str(s)), enc) = (args.first(), args.get(1)) else {
            return Err(self.bad("_codecs.encode without a string"));
        };
        let latin1 = match enc {
            None => false,
            Some(Value::Str(e)) => matches!(
                e.to_ascii_lowercase().as_str(),
                "latin1" | "latin-1" | "iso-8859-1"
            ),
            _ => return Err(self.bad("_codecs.encode with a bad encoding")),
        };
        let bytes: Vec<u8> = if latin1 {
            s.chars()
                .map(|c| {
                    u8::try_from(c as u32)
                        .map_err(|_| self.bad("latin-1 text holds a wide character"))
                })
                .collect::<Result<_>>()?
        } else {
            s.as_bytes().to_vec()
        };
        self.charge(bytes.len() as u64)?;
        self.push(Value::Bytes(Rc::from(bytes)))
    }
}

/// An integer from little-endian two's complement bytes (`LONG1`/`LONG4`).
fn le_to_int(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xFF; 8] } else { [0; 8] };
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(Rc::from(b))
}

/// A decimal integer (`INT`/`LONG` text opcodes), wide ones as [`Value::BigInt`].
fn parse_decimal(s: &str) -> Option<Value> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Some(Value::Int(v));
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Magnitude as little-endian bytes: multiply by ten and add, digit by digit.
    let mut mag: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = (d - b'0') as u32;
        for byte in mag.iter_mut() {
            let v = *byte as u32 * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    mag.push(0); // room for the sign bit
    if neg {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = (!*byte) as u16 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    Some(Value::BigInt(Rc::from(mag)))
}

/// The bytes of a protocol-0 `STRING` argument: a quoted Python literal with escapes.
fn unquote(l: &[u8]) -> Option<Vec<u8>> {
    let q = *l.first()?;
    if l.len() < 2 || (q != b'\'' && q != b'"') || *l.last()? != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let h = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// The text of a protocol-0 `UNICODE` argument (`raw-unicode-escape`: `\uXXXX`,
/// `\UXXXXXXXX`, other bytes Latin-1).
fn raw_unicode_unescape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        if c == b'\\' && matches!(l.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = std::str::from_utf8(l.get(i + 2..i + 2 + n)?).ok()?;
            out.push(char::from_u32(u32::from_str_radix(h, 16).ok()?)?);
            i += 2 + n;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Pickle> {
        load(Path::new("t.pkl"), bytes, &Options::default()).map(|(p, _)| p)
    }

    fn refused(bytes: &[u8]) -> String {
        match run(bytes) {
            Err(Error::UnsafePickle { global, .. }) => global,
            other => panic!("expected UnsafePickle, got {other:?}"),
        }
    }

    #[test]
    fn refuses_os_system_before_running_anything() {
        let g = refused(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00lsq\x00\x85q\x01Rq\x02.");
        assert_eq!(g, "posix system");
        assert_eq!(refused(b"cos\nsystem\n(S'ls'\ntR."), "os system");
        assert_eq!(
            refused(
                b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93."
            ),
            "builtins eval"
        );
        assert_eq!(refused(b"c__builtin__\neval\n."), "__builtin__ eval");
        assert_eq!(
            refused(b"(S'ls'\nisubprocess\nPopen\n."),
            "subprocess Popen"
        );
        // A TorchScript class is refused outside TorchScript archives.
        assert_eq!(refused(b"\x80\x02c__torch__\nM\n)\x81."), "__torch__ M");
        let msg = Error::UnsafePickle {
            path: "m.pth".into(),
            global: "posix system".into(),
        }
        .to_string();
        assert!(msg.contains("posix system"), "{msg}");
    }

    #[test]
    fn builds_ordered_dict_with_shared_references() {
        // {'a': od, 'b': od} where od = OrderedDict(x=1) is memoized before it is filled.
        let p = run(b"\x80\x02}q\x00(X\x01\x00\x00\x00accollections\nOrderedDict\nq\x01)Rq\x02X\x01\x00\x00\x00xK\x01sX\x01\x00\x00\x00bh\x02u.").unwrap();
        let root = p.dict(&p.root).unwrap();
        let b = root.get_str("b").unwrap();
        let od = p.dict(b).unwrap();
        assert_eq!(od.get_str("x"), Some(&Value::Int(1)));
    }

    #[test]
    fn scalars_and_text_opcodes() {
        let p = run(b"(I42\nI00\nL123456789012345678901234567890L\nF1.5\nS'a\\'b\\x41'\nVcaf\\u00e9\nN\x8a\x01\xff\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19l.").unwrap();
        let items = p.items(&p.root).unwrap();
        assert_eq!(items[0], Value::Int(42));
        assert_eq!(items[1], Value::Bool(false));
        assert!(matches!(items[2], Value::BigInt(_)));
        assert_eq!(items[3], Value::Float(1.5));
        assert_eq!(items[4], Value::Str("a'bA".into()));
        assert_eq!(items[5], Value::Str("café".into()));
        assert_eq!(items[6], Value::None);
        assert_eq!(items[7], Value::Int(-1));
        assert_eq!(
            items[8],
            Value::BigInt(Rc::from(
                &[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19][..]
            ))
        );
        // The same magic number in decimal parses to the same bytes (plus a sign byte).
        match parse_decimal("119547037146038801333356") {
            Some(Value::BigInt(b)) => assert_eq!(
                &b[..10],
                &[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_input_is_malformed_at_every_cut() {
        let full: &[u8] = b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01ccollections\nOrderedDict\nq\x02)Rq\x03X\x01\x00\x00\x00xG?\xf0\x00\x00\x00\x00\x00\x00su.";
        assert!(run(full).is_ok());
        for n in 0..full.len() {
            match run(&full[..n]) {
                Err(Error::File(crate::FileError {
                    problem: crate::FileProblem::Malformed(msg),
                    ..
                })) => assert!(msg.starts_with("pickle:"), "{msg}"),
                other => panic!("cut at {n}: {other:?}"),
            }
        }
    }

    #[test]
    fn absurd_lengths_do_not_allocate() {
        // BINUNICODE8 / BINBYTES8 claiming 2^63 bytes.
        for op in [0x8du8, 0x8e, 0x96] {
            let mut b = vec![0x80, 4, op];
            b.extend_from_slice(&(1u64 << 63).to_le_bytes());
            let e = run(&b).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{e}");
        }
        let e = run(b"\x8b\xff\xff\xff\x7f").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn structural_errors_are_malformed() {
        for bad in [
            &b"."[..],
            b"0.",
            b"h\x05.",
            b"Ns.",
            b"t.",
            b"NNR.",
            b"\x80\x09N.",
            b"\xffN.",
        ] {
            assert!(
                matches!(
                    run(bad),
                    Err(Error::File(crate::FileError {
                        problem: crate::FileProblem::Malformed(_),
                        ..
                    }))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn torchscript_classes_are_opaque_objects() {
        let opts = Options { torchscript: true };
        let (p, n) = load(
            Path::new("t"),
            b"\x80\x02c__torch__\nM\nq\x00)\x81}(X\x08\x00\x00\x00trainingq\x01\x88ub.junk",
            &opts,
        )
        .unwrap();
        assert_eq!(n, 40);
        let c = p.call(&p.root).unwrap();
        assert!(c.func.is("__torch__", "M"));
        let state = p.dict(c.state.as_ref().unwrap()).unwrap();
        assert_eq!(state.get_str("training"), Some(&Value::Bool(true)));
    }

    #[test]
    fn bytes_via_codecs_and_sets() {
        let p = run(b"\x80\x02(c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1\x86Rc__builtin__\nset\n]K\x01a\x85Rt.").unwrap();
        let items = p.items(&p.root).unwrap();
        assert_eq!(items[0], Value::Bytes(Rc::from(&[0xFFu8][..])));
        assert!(matches!(p.obj(&items[1]), Some(Object::Set(s)) if s == &vec![Value::Int(1)]));
    }
}
