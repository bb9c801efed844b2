"""Golden vectors for hardware verification: dump, manifest, file formats, load and exact compare
(docs/golden.md).

    formats.py   tensor formats, canonical bytes, .hex for $readmemh, tensor ids
    writer.py    dump(program, q_input, out_dir): one run's tensors and constants, atomically;
                 TensorWriter, write_constants, op_record, write_atomically (shared with intsim.conformance)
    reader.py    read_manifest, read_file, load (lazy GoldenSet), load_program (the dump's program)
    comparator.py compare(golden_dir, other_dir): exact, first diverging tensor first
"""
from .comparator import CompareReport, FileResult, compare, op_labels
from .writer import (TensorWriter, check_output, dump, manifest_text, op_record, write_atomically,
                     write_constants)
from .formats import (FORMATS, GOLDEN_SCHEMA, MANIFEST, PACK_MAX, SCHEMA_NAME, GoldenError, TFormat,
                      act_id, canonical, check_formats, check_pack, const_id, hex_text,
                      hex_word_digits, parse_hex)
from .reader import (GoldenSet, OpView, Tensors, entry_format, load, load_program, program_const, read_file,
                     read_manifest)

__all__ = ["CompareReport", "FileResult", "FORMATS", "GOLDEN_SCHEMA", "GoldenError", "GoldenSet",
           "MANIFEST", "OpView", "PACK_MAX", "SCHEMA_NAME", "TFormat", "Tensors", "act_id", "canonical",
           "check_formats", "check_output", "check_pack", "compare", "const_id", "dump", "entry_format",
           "hex_text", "hex_word_digits", "load", "load_program", "manifest_text", "op_labels",
           "parse_hex", "program_const", "read_file", "read_manifest", "TensorWriter", "write_atomically",
           "write_constants", "op_record"]
