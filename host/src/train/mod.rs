//! Training: batches and losses ([`batch`]), fine-tuning augmentation ([`augment`]), AdamW ([`adamw`]), the learning-rate
//! schedule ([`schedule`]), the one training loop ([`trainer`]) and its two tasks,
//! pretraining ([`pretrain`], also `bench train`) and fine-tuning ([`finetune`]), on one
//! process or data parallel over MPI ranks ([`distributed`]).

pub mod adamw;
pub mod augment;
pub mod batch;
pub mod distributed;
pub mod finetune;
pub mod pretrain;
pub mod schedule;
pub mod trainer;

pub use crate::io::meta::AdamConfig;
pub use adamw::AdamW;
pub use batch::{bits, evaluate, loss, make_batch, scalar, Batch, BERT_MASK_P};
pub use schedule::{lr_at, lr_with, Schedule};
