//! TensorBoard event files, PNG summaries, progress bar and metric summaries.
