//! One module per subcommand: argument struct plus `run`.

pub mod auto_quant;
pub mod calibrate;
pub mod convert;
pub mod data;
pub mod devices;
pub mod diff;
pub mod eval;
pub mod inspect;
pub mod inspect_graph;
pub mod migrate;
pub mod optimize;
pub mod place;
pub mod placing;
pub mod probe_args;
pub mod run;
pub mod run_model;
pub mod train;
pub mod verify;
