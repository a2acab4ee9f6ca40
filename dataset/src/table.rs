//! Reading parquet files into typed columns, with errors that name the file and column.

use crate::error::{DatasetError, Result, io_err};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// All record batches of one parquet file.
#[derive(Debug)]
pub struct Table {
    pub path: PathBuf,
    batches: Vec<RecordBatch>,
    columns: Vec<String>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        let perr = |e: &dyn std::fmt::Display| DatasetError::Parquet { path: path.to_path_buf(), message: e.to_string() };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| perr(&e))?;
        let columns = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        let reader = builder.build().map_err(|e| perr(&e))?;
        let mut batches = Vec::new();
        for b in reader {
            batches.push(b.map_err(|e| perr(&e))?);
        }
        Ok(Self { path: path.to_path_buf(), batches, columns })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    fn arrays(&self, column: &str) -> Result<Vec<&ArrayRef>> {
        if !self.has(column) {
            return Err(DatasetError::MissingColumn { path: self.path.clone(), column: column.to_string() });
        }
        Ok(self.batches.iter().filter_map(|b| b.column_by_name(column)).collect())
    }

    fn type_err(&self, column: &str, found: &DataType, expected: &str) -> DatasetError {
        DatasetError::ColumnType { path: self.path.clone(), column: column.into(), found: format!("{found}"), expected: expected.into() }
    }

    fn no_nulls(&self, column: &str, a: &dyn Array) -> Result<()> {
        if a.null_count() > 0 {
            return Err(DatasetError::InvalidField { path: self.path.clone(), field: column.into(), message: "contains nulls".into() });
        }
        Ok(())
    }

    /// Integer column (int64 or int32).
    pub fn i64s(&self, column: &str) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for a in self.arrays(column)? {
            self.no_nulls(column, a.as_ref())?;
            match a.data_type() {
                DataType::Int64 => out.extend(a.as_primitive::<Int64Type>().values().iter().copied()),
                DataType::Int32 => out.extend(a.as_primitive::<Int32Type>().values().iter().map(|&v| i64::from(v))),
                t => return Err(self.type_err(column, t, "int64")),
            }
        }
        Ok(out)
    }

    /// Floating column (float32 or float64).
    pub fn f64s(&self, column: &str) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for a in self.arrays(column)? {
            self.no_nulls(column, a.as_ref())?;
            match a.data_type() {
                DataType::Float32 => out.extend(a.as_primitive::<Float32Type>().values().iter().map(|&v| f64::from(v))),
                DataType::Float64 => out.extend(a.as_primitive::<Float64Type>().values().iter().copied()),
                t => return Err(self.type_err(column, t, "float32 or float64")),
            }
        }
        Ok(out)
    }

    /// String column.
    pub fn strings(&self, column: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for a in self.arrays(column)? {
            self.no_nulls(column, a.as_ref())?;
            match a.data_type() {
                DataType::Utf8 => out.extend(a.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string())),
                DataType::LargeUtf8 => out.extend(a.as_string::<i64>().iter().map(|s| s.unwrap_or_default().to_string())),
                t => return Err(self.type_err(column, t, "string")),
            }
        }
        Ok(out)
    }

    /// List-of-strings column.
    pub fn string_lists(&self, column: &str) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for a in self.arrays(column)? {
            let list = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>(),
                t => return Err(self.type_err(column, t, "list<string>")),
            };
            for i in 0..list.len() {
                let v = list.value(i);
                let s = match v.data_type() {
                    DataType::Utf8 => v.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect(),
                    t => return Err(self.type_err(column, t, "list<string>")),
                };
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Fixed-width float vectors (fixed-size list or list of float32/float64), returned as
    /// `(width, row-major values)`.
    pub fn f32_rows(&self, column: &str) -> Result<(usize, Vec<f32>)> {
        let mut out = Vec::new();
        let mut width: Option<usize> = None;
        for a in self.arrays(column)? {
            self.no_nulls(column, a.as_ref())?;
            let (values, offsets): (ArrayRef, Vec<usize>) = match a.data_type() {
                DataType::FixedSizeList(_, n) => {
                    let l = a.as_fixed_size_list();
                    let n = *n as usize;
                    (l.values().slice(l.offset() * n, l.len() * n), (0..=l.len()).map(|i| i * n).collect())
                }
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    let o = l.value_offsets();
                    (l.values().clone(), o.iter().map(|&v| v as usize).collect())
                }
                t => return Err(self.type_err(column, t, "list<float32>")),
            };
            let flat: Vec<f32> = match values.data_type() {
                DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
                DataType::Float64 => values.as_primitive::<Float64Type>().values().iter().map(|&v| v as f32).collect(),
                t => return Err(self.type_err(column, t, "list<float32>")),
            };
            for w in offsets.windows(2) {
                let n = w[1] - w[0];
                match width {
                    None => width = Some(n),
                    Some(m) if m != n => {
                        return Err(DatasetError::InvalidField {
                            path: self.path.clone(),
                            field: column.into(),
                            message: format!("rows have different lengths ({m} and {n})"),
                        });
                    }
                    _ => {}
                }
                out.extend_from_slice(&flat[w[0]..w[1]]);
            }
        }
        Ok((width.unwrap_or(0), out))
    }
}
