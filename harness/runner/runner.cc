// edgefarm-runner: times one Relax VM function of a module exported by TVM.
//
// It loads the module, creates the Relax VM, reads .npy inputs, warms up, times single calls
// until both a minimum count and a minimum duration are reached, writes the last call's outputs
// as .npy files and prints exactly one JSON object on stdout. Every failure is reported as
// {"status":"error","stage":...,"message":...} with exit status 2 (64 for a usage error), never
// as a crash, so the harness can tell the user's mistakes from the farm's.
//
// Only the tvm/ffi headers (and dlpack) are used: the wheel's tvm/runtime headers include files
// the wheel does not ship. The TVM runtime is linked so that its static initialisers register
// the loaders and the Relax VM; the link line must keep it (--no-as-needed).

#include <dlpack/dlpack.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/list.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace edgefarm {
namespace {

namespace ffi = tvm::ffi;
using Clock = std::chrono::steady_clock;

constexpr const char* kRunnerVersion = "1";
constexpr int kExitError = 2;
constexpr int kExitUsage = 64;
// TVM's kernels are compiled assuming 64-byte aligned buffers (its kAllocAlignment).
constexpr size_t kAlignment = 64;
// The Relax VM allocator kinds of vm_initialization: 1 = naive, 2 = pooled.
constexpr int kPooledAllocator = 2;

// ---------------------------------------------------------------------------------------------
// Errors and JSON
// ---------------------------------------------------------------------------------------------

// A failure with the stage it belongs to; turned into the error JSON by main.
class StageError : public std::exception {
 public:
  StageError(std::string stage, std::string message)
      : stage_(std::move(stage)), message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& stage() const { return stage_; }
  const std::string& message() const { return message_; }

 private:
  std::string stage_;
  std::string message_;
};

// Collapses whitespace (TVM messages span lines) and caps the length.
std::string OneLine(const std::string& text, size_t limit = 2000) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
  }
  if (out.size() > limit) out = out.substr(0, limit - 3) + "...";
  return out;
}

// The message of a TVM error without its C++ backtrace: "Kind: message".
std::string DescribeTvmError(const ffi::Error& err) {
  std::string kind = err.kind();
  std::string message = err.message();
  return OneLine(kind.empty() ? message : kind + ": " + message);
}

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t Utf8SequenceLength(const std::string& s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n = 0;
  uint32_t min_cp = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2, cp = c & 0x1F, min_cp = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, cp = c & 0x0F, min_cp = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, cp = c & 0x07, min_cp = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char cc = byte(i + k);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// A JSON string literal. Paths and file headers can hold any bytes: invalid UTF-8 becomes
// U+FFFD so that the report always decodes.
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else if (c < 0x80) {
          out.push_back(static_cast<char>(c));
        } else if (size_t n = Utf8SequenceLength(s, i)) {
          out.append(s, i, n);
          i += n - 1;
        } else {
          out += "\\ufffd";
        }
    }
  }
  out += "\"";
  return out;
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6f", v);
  return buf;
}

std::string JsonShape(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string ShapeText(const std::vector<int64_t>& shape) { return JsonShape(shape); }

// TVM's pool sized to ``threads`` (at most the cores this process sees), before anything
// runs. TVM_NUM_THREADS alone cannot do it: it sets the pool's size, but TVM then uses only
// the fastest cluster's cores (all of them on x86-64, where its own default is half the
// cores). runtime.config_threadpool(kBig, n) uses n, bound to the n fastest cores.
void ConfigurePool(int64_t threads) {
  unsigned cores = std::thread::hardware_concurrency();
  int64_t n = cores > 0 ? std::min<int64_t>(threads, cores) : threads;
  setenv("TVM_NUM_THREADS", std::to_string(n).c_str(), 1);
  auto configure = ffi::Function::GetGlobal("runtime.config_threadpool");
  if (!configure) throw StageError("run", "this TVM runtime cannot size its thread pool");
  constexpr int kBig = 1;  // TVM's AffinityMode: the fastest cores first
  (*configure)(kBig, static_cast<int>(n));
}

// How many threads TVM's pool runs parallel loops on (it is made on first use, from
// TVM_NUM_THREADS or TVM's default); 0 when this runtime cannot say.
int64_t PoolThreads() {
  auto num_threads = ffi::Function::GetGlobal("runtime.NumThreads");
  if (!num_threads) return 0;
  try {
    return (*num_threads)().cast<int64_t>();
  } catch (const ffi::Error&) {
    return 0;
  }
}

void PrintJson(const std::string& json) {
  std::fwrite(json.data(), 1, json.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int ReportError(const std::string& stage, const std::string& message) {
  std::string json = "{\"status\":\"error\",\"runner_version\":" + JsonString(kRunnerVersion) +
                     ",\"stage\":" + JsonString(stage) +
                     ",\"message\":" + JsonString(OneLine(message)) + "}";
  PrintJson(json);
  return stage == "usage" ? kExitUsage : kExitError;
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

constexpr const char* kUsage =
    "usage: edgefarm-runner --module PATH [--entry NAME] [--input PATH]... [--output-dir DIR]\n"
    "                       [--warmup N] [--min-iterations N] [--min-seconds S]\n"
    "                       [--max-seconds S] [--max-iterations N]\n"
    "                       [--profile] [--profile-iterations N] [--threads N]\n"
    "\n"
    "Loads a TVM Relax module (.so), calls ENTRY (default main) with the .npy inputs in order,\n"
    "warms up N calls (default 5), then times single calls until both --min-iterations\n"
    "(default 20) and --min-seconds (default 1) are reached; it stops at --max-seconds\n"
    "(default 60) once one call is timed, or at --max-iterations (default: no limit).\n"
    "Outputs of the last call go to DIR/out0.npy, out1.npy, ... Prints one JSON object.\n"
    "--pid-file PATH writes the runner's pid to PATH at start\n"
    "--profile times every packed call in separate iterations after the timed ones\n"
    "(as many as were timed, or --profile-iterations N).\n"
    "--threads N runs TVM's thread pool with N threads (at most the cores), on the fastest\n"
    "cores; without it, TVM's default (x86-64: half the cores; arm: the fastest cluster's),\n"
    "or fewer with TVM_NUM_THREADS. The report's threads says how many the pool had.\n"
    "\n"
    "usage: edgefarm-runner --kernels PLAN [--number N] [--repeat N] [--min-repeat-ms MS]\n"
    "                       [--threads N]\n"
    "\n"
    "Kernel timing (tuning candidates): PLAN holds one line per kernel, 'LIBRARY ARG...', each\n"
    "ARG DTYPE:SHAPE (float32:1x8x16x16; float32:scalar for a 0-d tensor). Each LIBRARY's\n"
    "function main is called on freshly allocated arguments (floats random, integers 0) once\n"
    "to warm up, then timed --repeat times (default 1), each the mean of --number calls\n"
    "(default 3), raised until a repeat lasts --min-repeat-ms (default 40). One JSON line per\n"
    "kernel as it finishes (costs_s, or its error), then a summary line.\n";

struct Options {
  std::string module_path;
  std::string entry = "main";
  std::vector<std::string> inputs;
  std::string output_dir;
  int64_t warmup = 5;
  int64_t min_iterations = 20;
  double min_seconds = 1.0;
  double max_seconds = 60.0;
  int64_t max_iterations = 0;  // 0: no limit
  bool profile = false;
  int64_t profile_iterations = 0;  // 0: as many as timed
  std::string pid_file;  // where to write our pid, so a later run can end a leftover runner
  // Kernel timing mode (--kernels): a plan of tuning candidates instead of a Relax module.
  std::string kernels_plan;
  int64_t number = 3;
  int64_t repeat = 1;
  double min_repeat_ms = 40.0;
  int64_t threads = 0;  // 0: TVM_NUM_THREADS or TVM's default
};

int64_t ParseCount(const std::string& flag, const std::string& text, int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min_value) {
    throw StageError("usage", flag + " expects a whole number >= " + std::to_string(min_value) +
                                  ", got '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

double ParseSeconds(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v) || v < 0) {
    throw StageError("usage", flag + " expects a number of seconds >= 0, got '" + text + "'");
  }
  return v;
}

// Returns false when --help was asked for.
bool ParseArgs(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline_value = true;
      }
    }
    auto next = [&]() -> std::string {
      if (has_inline_value) return value;
      if (i + 1 >= argc) throw StageError("usage", arg + " needs a value; see --help");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      return false;
    } else if (arg == "--module") {
      opt->module_path = next();
    } else if (arg == "--entry") {
      opt->entry = next();
    } else if (arg == "--input") {
      opt->inputs.push_back(next());
    } else if (arg == "--output-dir") {
      opt->output_dir = next();
    } else if (arg == "--warmup") {
      opt->warmup = ParseCount(arg, next(), 0);
    } else if (arg == "--min-iterations") {
      opt->min_iterations = ParseCount(arg, next(), 1);
    } else if (arg == "--min-seconds") {
      opt->min_seconds = ParseSeconds(arg, next());
    } else if (arg == "--max-seconds") {
      opt->max_seconds = ParseSeconds(arg, next());
    } else if (arg == "--max-iterations") {
      opt->max_iterations = ParseCount(arg, next(), 1);
    } else if (arg == "--profile") {
      if (has_inline_value) throw StageError("usage", "--profile takes no value");
      opt->profile = true;
    } else if (arg == "--profile-iterations") {
      opt->profile_iterations = ParseCount(arg, next(), 1);
    } else if (arg == "--pid-file") {
      opt->pid_file = next();
    } else if (arg == "--kernels") {
      opt->kernels_plan = next();
    } else if (arg == "--number") {
      opt->number = ParseCount(arg, next(), 1);
    } else if (arg == "--repeat") {
      opt->repeat = ParseCount(arg, next(), 1);
    } else if (arg == "--min-repeat-ms") {
      opt->min_repeat_ms = ParseSeconds(arg, next());
    } else if (arg == "--threads") {
      opt->threads = ParseCount(arg, next(), 1);
    } else {
      throw StageError("usage", "unknown argument '" + std::string(argv[i]) + "'; see --help");
    }
  }
  if (!opt->kernels_plan.empty()) {
    if (!opt->module_path.empty()) {
      throw StageError("usage", "--kernels and --module exclude each other");
    }
    return true;
  }
  if (opt->module_path.empty()) {
    throw StageError("usage", "--module PATH is required (the .so exported by TVM)");
  }
  if (opt->entry.empty()) throw StageError("usage", "--entry must not be empty");
  if (opt->max_iterations > 0 && opt->max_iterations < opt->min_iterations) {
    throw StageError("usage", "--max-iterations (" + std::to_string(opt->max_iterations) +
                                  ") is below --min-iterations (" +
                                  std::to_string(opt->min_iterations) + ")");
  }
  if (opt->max_seconds < opt->min_seconds) {
    throw StageError("usage", "--max-seconds is below --min-seconds");
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// .npy files
// ---------------------------------------------------------------------------------------------

struct DtypeInfo {
  const char* name;   // TVM's name
  char kind;          // numpy kind: f, i, u, b
  int itemsize;       // bytes
  DLDataType dl;
};

const std::vector<DtypeInfo>& Dtypes() {
  static const std::vector<DtypeInfo> table = {
      {"float16", 'f', 2, {kDLFloat, 16, 1}}, {"float32", 'f', 4, {kDLFloat, 32, 1}},
      {"float64", 'f', 8, {kDLFloat, 64, 1}}, {"int8", 'i', 1, {kDLInt, 8, 1}},
      {"int16", 'i', 2, {kDLInt, 16, 1}},     {"int32", 'i', 4, {kDLInt, 32, 1}},
      {"int64", 'i', 8, {kDLInt, 64, 1}},     {"uint8", 'u', 1, {kDLUInt, 8, 1}},
      {"uint16", 'u', 2, {kDLUInt, 16, 1}},   {"uint32", 'u', 4, {kDLUInt, 32, 1}},
      {"uint64", 'u', 8, {kDLUInt, 64, 1}},   {"bool", 'b', 1, {kDLBool, 8, 1}},
  };
  return table;
}

const DtypeInfo* DtypeFromDL(DLDataType dt) {
  for (const DtypeInfo& d : Dtypes()) {
    if (d.dl.code == dt.code && d.dl.bits == dt.bits && d.dl.lanes == dt.lanes) return &d;
  }
  return nullptr;
}

std::string DtypeName(DLDataType dt) {
  if (const DtypeInfo* d = DtypeFromDL(dt)) return d->name;
  return std::string(ffi::DLDataTypeToString(dt));
}

std::string NpyDescr(const DtypeInfo& d) {
  // Single bytes have no byte order in numpy's spelling.
  return std::string(d.itemsize == 1 ? "|" : "<") + d.kind + std::to_string(d.itemsize);
}

// Host memory for input tensors, aligned as TVM's kernels assume. A failed allocation leaves
// data null (the caller checks): throwing inside the Tensor's constructor would leak it.
struct AlignedCPUAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = ffi::GetDataSize(*tensor);
    size_t rounded = std::max(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment);
    tensor->data = std::aligned_alloc(kAlignment, rounded);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct HostArray {
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  std::optional<ffi::Tensor> tensor;
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Checked product of the shape; false on overflow.
bool NumElements(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return false;
    n *= d;
  }
  *out = n;
  return true;
}

// Finds the value text of 'key' in a numpy header dict; empty if missing.
std::string HeaderValue(const std::string& header, const std::string& key) {
  std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  for (const std::string& q : quoted) {
    size_t pos = header.find(q);
    if (pos == std::string::npos) continue;
    pos = header.find(':', pos + q.size());
    if (pos == std::string::npos) return "";
    ++pos;
    while (pos < header.size() && header[pos] == ' ') ++pos;
    if (pos >= header.size()) return "";
    if (header[pos] == '(') {
      size_t end = header.find(')', pos);
      return end == std::string::npos ? "" : header.substr(pos, end - pos + 1);
    }
    if (header[pos] == '\'' || header[pos] == '"') {
      size_t end = header.find(header[pos], pos + 1);
      return end == std::string::npos ? "" : header.substr(pos, end - pos + 1);
    }
    size_t end = header.find_first_of(",}", pos);
    std::string v = header.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    while (!v.empty() && v.back() == ' ') v.pop_back();
    return v;
  }
  return "";
}

// Reads a .npy file straight into a new CPU tensor (no intermediate copy, so the input does
// not inflate the peak RSS the runner reports).
HostArray ReadNpy(const std::string& path, size_t index) {
  const std::string who = "input " + std::to_string(index) + " (" + path + ")";
  auto fail = [&](const std::string& why) -> StageError {
    return StageError("input", who + " " + why);
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) throw fail("cannot be opened: check the --input path and that the file was pushed");
  in.seekg(0, std::ios::end);
  std::streamoff end = in.tellg();
  in.seekg(0, std::ios::beg);
  if (end < 0) throw fail("cannot be read (is it a regular file?)");
  const size_t file_size = static_cast<size_t>(end);

  unsigned char prefix[12] = {0};
  size_t prefix_len = std::min<size_t>(file_size, sizeof(prefix));
  in.read(reinterpret_cast<char*>(prefix), static_cast<std::streamsize>(prefix_len));
  static const char kMagic[] = "\x93NUMPY";
  if (prefix_len < 10 || std::memcmp(prefix, kMagic, 6) != 0) {
    throw fail("is not a .npy file (bad magic); write inputs with numpy.save");
  }
  int major = prefix[6];
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(prefix[8]) | (static_cast<size_t>(prefix[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (prefix_len < 12) throw fail("is truncated inside its header; write it again");
    header_len = static_cast<size_t>(prefix[8]) | (static_cast<size_t>(prefix[9]) << 8) |
                 (static_cast<size_t>(prefix[10]) << 16) | (static_cast<size_t>(prefix[11]) << 24);
    header_start = 12;
  } else {
    throw fail("has unsupported .npy format version " + std::to_string(major) +
               "; write it with numpy.save");
  }
  if (header_len > file_size - header_start) {
    throw fail("is truncated inside its header; write it again with numpy.save");
  }
  std::string header(header_len, '\0');
  in.seekg(static_cast<std::streamoff>(header_start), std::ios::beg);
  in.read(&header[0], static_cast<std::streamsize>(header_len));
  if (!in) throw fail("could not be read (I/O error)");

  std::string descr = HeaderValue(header, "descr");
  std::string fortran = HeaderValue(header, "fortran_order");
  std::string shape_text = HeaderValue(header, "shape");
  if (descr.size() < 3 || shape_text.empty() || fortran.empty()) {
    throw fail("has an unreadable .npy header; write it with numpy.save");
  }
  if (fortran != "False") {
    throw fail(
        "is stored in Fortran order; save a C-contiguous array "
        "(numpy.save(path, numpy.ascontiguousarray(a)))");
  }
  descr = descr.substr(1, descr.size() - 2);  // strip quotes
  const DtypeInfo* dtype = nullptr;
  if (descr.size() >= 3) {
    char order = descr[0];
    char kind = descr[1];
    std::string size_text = descr.substr(2);
    bool size_ok = !size_text.empty() &&
                   std::all_of(size_text.begin(), size_text.end(), IsDigit) &&
                   size_text.size() < 4;
    int itemsize = size_ok ? std::atoi(size_text.c_str()) : 0;
    if (order == '>' && itemsize > 1) {
      throw fail("is big-endian ('" + descr + "'); save it little-endian (a.astype('<" +
                 std::string(1, kind) + size_text + "'))");
    }
    if (order == '<' || order == '|' || order == '=' || order == '>') {
      for (const DtypeInfo& d : Dtypes()) {
        if (d.kind == kind && d.itemsize == itemsize) dtype = &d;
      }
    }
  }
  if (dtype == nullptr) {
    throw fail("has unsupported dtype '" + descr +
               "'; use float32, float16, float64, int8/16/32/64, uint8/16/32/64 or bool");
  }

  std::vector<int64_t> shape;
  std::string inner = shape_text.substr(1, shape_text.size() - 2);
  std::stringstream ss(inner);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(' ');
    if (b == std::string::npos) continue;  // trailing comma of a 1-tuple
    size_t e = item.find_last_not_of(' ');
    std::string dim = item.substr(b, e - b + 1);
    if (!dim.empty() && dim.back() == 'L') dim.pop_back();  // Python 2 long suffix
    if (dim.empty() || dim.size() > 18 || !std::all_of(dim.begin(), dim.end(), IsDigit)) {
      throw fail("has an unreadable shape " + shape_text + " in its header");
    }
    shape.push_back(std::atoll(dim.c_str()));
  }
  int64_t numel = 0;
  if (!NumElements(shape, &numel) ||
      numel > std::numeric_limits<int64_t>::max() / dtype->itemsize) {
    throw fail("has an impossible shape " + shape_text);
  }
  size_t data_start = header_start + header_len;
  size_t want = static_cast<size_t>(numel) * static_cast<size_t>(dtype->itemsize);
  size_t have = file_size - data_start;
  if (have < want) {
    throw fail("is truncated: its header says " + std::string(dtype->name) + ShapeText(shape) +
               " (" + std::to_string(want) + " bytes) but it holds " + std::to_string(have) +
               " bytes; copy or write it again");
  }
  if (have > want) {
    throw fail("has " + std::to_string(have - want) +
               " bytes after its data; it is not a plain .npy array (an .npz or object array?)");
  }
  HostArray out;
  out.dtype = dtype;
  out.shape = std::move(shape);
  ffi::ShapeView shape_view(out.shape.data(), out.shape.size());
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), shape_view, dtype->dl,
                                                DLDevice{kDLCPU, 0});
  if (tensor.data_ptr() == nullptr) {
    throw fail("does not fit in memory (" + std::to_string(want) + " bytes)");
  }
  if (want > 0) {
    in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(want));
    if (static_cast<size_t>(in.gcount()) != want) throw fail("could not be read (I/O error)");
  }
  out.tensor = std::move(tensor);
  return out;
}

void WriteNpy(const std::string& path, const DtypeInfo& dtype, const std::vector<int64_t>& shape,
              const char* data, size_t nbytes) {
  std::string shape_text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    shape_text += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) shape_text += ", ";
  }
  if (shape.size() == 1) shape_text.pop_back();  // "(n, " -> "(n,"
  shape_text += ")";
  std::string header = "{'descr': '" + NpyDescr(dtype) +
                       "', 'fortran_order': False, 'shape': " + shape_text + ", }";
  // Pad so that the data starts on a 64-byte boundary, as numpy does; end with a newline.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    throw StageError("output",
                     "cannot create " + path + ": check --output-dir exists and is writable");
  }
  const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, sizeof(magic));
  uint16_t len = static_cast<uint16_t>(header.size());
  char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(data, static_cast<std::streamsize>(nbytes));
  out.flush();
  if (!out) throw StageError("output", "writing " + path + " failed (disk full?)");
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

struct OutputInfo {
  std::string file;  // empty: not written
  std::string dtype;
  std::vector<int64_t> shape;
};

// Flattens nested tuples depth-first, in order.
void FlattenOutputs(const ffi::Any& value, std::vector<ffi::Any>* out) {
  if (const auto* arr = value.as<ffi::ArrayObj>()) {
    for (size_t i = 0; i < arr->size(); ++i) FlattenOutputs((*arr)[static_cast<int64_t>(i)], out);
  } else if (const auto* list = value.as<ffi::ListObj>()) {
    for (size_t i = 0; i < list->size(); ++i) {
      FlattenOutputs((*list)[static_cast<int64_t>(i)], out);
    }
  } else {
    out->push_back(value);
  }
}

OutputInfo SaveOutput(const ffi::Any& value, size_t index, const std::string& dir) {
  OutputInfo info;
  std::string file = "out" + std::to_string(index) + ".npy";
  std::string path = dir.empty() ? "" : dir + "/" + file;
  std::string where = "output " + std::to_string(index);
  if (auto opt = value.as<ffi::Tensor>()) {
    const ffi::Tensor& t = *opt;
    const DLTensor* dl = t.GetDLTensorPtr();
    info.dtype = DtypeName(dl->dtype);
    info.shape.assign(dl->shape, dl->shape + dl->ndim);
    const DtypeInfo* dtype = DtypeFromDL(dl->dtype);
    if (!path.empty()) {
      if (dtype == nullptr) {
        throw StageError("output", where + " has dtype " + info.dtype +
                                       " which .npy cannot hold; cast the model's output");
      }
      if (dl->device.device_type != kDLCPU) {
        throw StageError("output", where + " is not on the CPU; the runner only reads CPU outputs");
      }
      if (!t.IsContiguous()) {
        throw StageError("output", where + " is not contiguous; the runner writes compact outputs");
      }
      const char* data = static_cast<const char*>(dl->data) + dl->byte_offset;
      WriteNpy(path, *dtype, info.shape, data, ffi::GetDataSize(*dl));
      info.file = file;
    }
    return info;
  }
  // Non-tensor leaves (a shape, a scalar) are written as small arrays, so every output has a file.
  std::vector<int64_t> values;
  std::vector<int64_t> shape;
  const DtypeInfo* dtype = nullptr;
  std::vector<char> bytes;
  if (auto shp = value.as<ffi::Shape>()) {
    values.assign(shp->begin(), shp->end());
    shape = {static_cast<int64_t>(values.size())};
    dtype = DtypeFromDL(DLDataType{kDLInt, 64, 1});
    bytes.resize(values.size() * sizeof(int64_t));
    if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  } else if (value.type_index() == ffi::TypeIndex::kTVMFFIBool) {
    dtype = DtypeFromDL(DLDataType{kDLBool, 8, 1});
    bytes.push_back(value.cast<bool>() ? 1 : 0);
  } else if (value.type_index() == ffi::TypeIndex::kTVMFFIInt) {
    dtype = DtypeFromDL(DLDataType{kDLInt, 64, 1});
    int64_t v = value.cast<int64_t>();
    bytes.resize(sizeof(v));
    std::memcpy(bytes.data(), &v, sizeof(v));
  } else if (value.type_index() == ffi::TypeIndex::kTVMFFIFloat) {
    dtype = DtypeFromDL(DLDataType{kDLFloat, 64, 1});
    double v = value.cast<double>();
    bytes.resize(sizeof(v));
    std::memcpy(bytes.data(), &v, sizeof(v));
  } else {
    throw StageError("output", where + " is a " + value.GetTypeKey() +
                                   ", not a tensor, tuple, shape or scalar; it cannot be saved");
  }
  info.dtype = dtype->name;
  info.shape = shape;
  if (!path.empty()) {
    WriteNpy(path, *dtype, shape, bytes.data(), bytes.size());
    info.file = file;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

double ElapsedMs(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t PeakRssKb() {
  // VmHWM is this address space's high-water mark, which starts afresh at exec. ru_maxrss is
  // not: Linux carries the largest RSS of the process's earlier images across execve, so a
  // runner started by a big Python process would report that process's memory.
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  struct rusage usage;  // no /proc: ru_maxrss, in kilobytes on Linux and Android
  if (getrusage(RUSAGE_SELF, &usage) == 0 && usage.ru_maxrss > 0) {
    return static_cast<int64_t>(usage.ru_maxrss);
  }
  return 0;
}

struct OpStats {
  int64_t calls = 0;
  double total_ms = 0;
  size_t first_seen = 0;
};

// Times every packed call the VM makes through its instrument hook. The VM calls it twice per
// call: (func, name, true, None, args...) before and (func, name, false, result, args...) after;
// returning 0 (kNoOp) lets the call run. Calls into other VM functions nest, hence the stack.
class Profiler {
 public:
  ffi::Function Callback() {
    return ffi::Function::FromPacked([this](ffi::PackedArgs args, ffi::Any* rv) {
      Clock::time_point now = Clock::now();
      std::string name = args[1].cast<std::string>();
      bool before = args[2].cast<bool>();
      if (before) {
        stack_.push_back(now);
      } else if (!stack_.empty()) {
        auto it = stats_.find(name);
        if (it == stats_.end()) {
          it = stats_.emplace(name, OpStats{}).first;
          it->second.first_seen = order_++;
        }
        OpStats& s = it->second;
        s.calls += 1;
        s.total_ms += ElapsedMs(stack_.back(), now);
        stack_.pop_back();
      }
      *rv = static_cast<int64_t>(0);
    });
  }
  std::string Json() const {
    std::vector<std::pair<std::string, OpStats>> rows(stats_.begin(), stats_.end());
    std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
      if (a.second.total_ms != b.second.total_ms) return a.second.total_ms > b.second.total_ms;
      return a.second.first_seen < b.second.first_seen;
    });
    std::string out = "[";
    for (size_t i = 0; i < rows.size(); ++i) {
      const OpStats& s = rows[i].second;
      if (i) out += ",";
      out += "{\"name\":" + JsonString(rows[i].first) + ",\"calls\":" + std::to_string(s.calls) +
             ",\"total_ms\":" + JsonNumber(s.total_ms) +
             ",\"mean_ms\":" + JsonNumber(s.calls ? s.total_ms / s.calls : 0.0) + "}";
    }
    return out + "]";
  }

 private:
  std::vector<Clock::time_point> stack_;
  std::map<std::string, OpStats> stats_;
  size_t order_ = 0;
};

int Run(const Options& opt) {
  // --- load: library, VM, initialisation --------------------------------------------------
  struct stat st;
  if (stat(opt.module_path.c_str(), &st) != 0) {
    throw StageError("load", "module file " + opt.module_path +
                                 " does not exist; push the artifact or fix --module");
  }
  if (!S_ISREG(st.st_mode)) {
    throw StageError("load", "module path " + opt.module_path + " is not a regular file");
  }
  // dlopen searches the library path for names without a slash: always pass an absolute path.
  std::string module_abs = opt.module_path;
  if (char* resolved = realpath(opt.module_path.c_str(), nullptr)) {
    module_abs = resolved;
    std::free(resolved);
  }
  Clock::time_point load_start = Clock::now();
  ffi::Function entry;
  std::optional<ffi::Module> vm;
  int64_t arity = -1;
  try {
    // Always the shared-library loader: the artifact's name need not end in .so.
    auto loader = ffi::Function::GetGlobal("ffi.Module.load_from_file.so");
    if (!loader) {
      throw StageError("load",
                       "the TVM runtime did not register its library loader; the runner was "
                       "linked without libtvm_runtime (rebuild it)");
    }
    ffi::Module lib = (*loader)(module_abs, "so").cast<ffi::Module>();
    ffi::Optional<ffi::Function> load_exec = lib->GetFunction("vm_load_executable", true);
    if (!load_exec) {
      throw StageError("load", opt.module_path +
                                   " holds no Relax VM executable (no vm_load_executable); "
                                   "export it with tvm.compile(...).export_library(path)");
    }
    vm = (*load_exec)().cast<ffi::Module>();
    ffi::Optional<ffi::Function> init = (*vm)->GetFunction("vm_initialization", false);
    if (!init) throw StageError("load", "the VM module has no vm_initialization function");
    // Same as tvm.runtime.vm.VirtualMachine(exec, tvm.cpu()): one CPU device (which is also the
    // host device for shape functions), pooled allocator.
    (*init)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
    ffi::Optional<ffi::Function> fn = (*vm)->GetFunction(ffi::String(opt.entry), false);
    if (!fn) {
      throw StageError("load", "the module has no function '" + opt.entry +
                                   "'; pass the right --entry (default main)");
    }
    entry = *fn;
    if (auto get_arity = (*vm)->GetFunction("get_function_arity", false)) {
      arity = (*get_arity)(opt.entry).cast<int64_t>();
    }
  } catch (const ffi::Error& e) {
    throw StageError("load", "loading " + opt.module_path +
                                 " failed (is it a TVM Relax library built for this machine?): " +
                                 DescribeTvmError(e));
  }
  double load_ms = ElapsedMs(load_start, Clock::now());

  // --- inputs -------------------------------------------------------------------------------
  std::vector<HostArray> arrays;
  for (size_t i = 0; i < opt.inputs.size(); ++i) arrays.push_back(ReadNpy(opt.inputs[i], i));
  if (arity >= 0 && static_cast<int64_t>(arrays.size()) != arity) {
    throw StageError("input", "'" + opt.entry + "' takes " + std::to_string(arity) +
                                  " input(s) but " + std::to_string(arrays.size()) +
                                  " --input file(s) were given; pass one .npy per input, in order");
  }
  std::vector<ffi::Tensor> tensors;
  std::string input_desc;  // for run errors
  std::string inputs_json = "[";
  for (size_t i = 0; i < arrays.size(); ++i) {
    tensors.push_back(*arrays[i].tensor);
    std::string base = opt.inputs[i];
    size_t slash = base.find_last_of('/');
    if (slash != std::string::npos) base = base.substr(slash + 1);
    if (i) {
      inputs_json += ",";
      input_desc += ", ";
    }
    inputs_json += "{\"file\":" + JsonString(base) + ",\"dtype\":" +
                   JsonString(arrays[i].dtype->name) + ",\"shape\":" + JsonShape(arrays[i].shape) +
                   "}";
    input_desc += "input " + std::to_string(i) + " " + arrays[i].dtype->name +
                  ShapeText(arrays[i].shape);
  }
  inputs_json += "]";
  arrays.clear();
  std::vector<ffi::AnyView> args(tensors.begin(), tensors.end());

  // --- run ----------------------------------------------------------------------------------
  ffi::Any result;
  auto call = [&]() {
    entry.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  };
  auto timed_call = [&]() -> double {
    Clock::time_point t0 = Clock::now();
    call();
    Clock::time_point t1 = Clock::now();
    return ElapsedMs(t0, t1);
  };
  double first_ms = 0;
  std::vector<double> samples;
  std::string profile_json;
  int64_t profile_iterations = 0;
  try {
    try {
      first_ms = timed_call();
    } catch (const ffi::Error& e) {
      throw StageError("run", "calling '" + opt.entry + "' with " +
                                  (input_desc.empty() ? std::string("no inputs") : input_desc) +
                                  " failed; check the inputs' shapes and dtypes against the "
                                  "model's: " + DescribeTvmError(e));
    }
    if (opt.warmup == 0) samples.push_back(first_ms);
    for (int64_t i = 1; i < opt.warmup; ++i) call();

    const double min_ms = opt.min_seconds * 1000.0;
    const double max_ms = opt.max_seconds * 1000.0;
    samples.reserve(static_cast<size_t>(std::max<int64_t>(opt.min_iterations, 1024)));
    Clock::time_point start = Clock::now();
    while (true) {
      int64_t n = static_cast<int64_t>(samples.size());
      double elapsed = ElapsedMs(start, Clock::now());
      if (n >= opt.min_iterations && elapsed >= min_ms) break;
      if (n >= 1 && elapsed >= max_ms) break;
      if (opt.max_iterations > 0 && n >= opt.max_iterations) break;
      samples.push_back(timed_call());
    }
  } catch (const StageError&) {
    throw;
  } catch (const ffi::Error& e) {
    throw StageError("run", "calling '" + opt.entry + "' failed after the first call succeeded: " +
                                DescribeTvmError(e));
  }

  // --- outputs (of the last timed call, before profiling touches anything) -----------------
  std::vector<OutputInfo> outputs;
  try {
    std::vector<ffi::Any> leaves;
    FlattenOutputs(result, &leaves);
    for (size_t i = 0; i < leaves.size(); ++i) {
      outputs.push_back(SaveOutput(leaves[i], i, opt.output_dir));
    }
  } catch (const ffi::Error& e) {
    throw StageError("output", "reading the outputs failed: " + DescribeTvmError(e));
  }
  result = nullptr;

  // --- profile (separate iterations, so the samples above are undisturbed) -------------------
  if (opt.profile) {
    Profiler profiler;
    try {
      ffi::Optional<ffi::Function> set_instrument = (*vm)->GetFunction("set_instrument", false);
      if (!set_instrument) {
        throw StageError("run", "this TVM runtime's VM has no set_instrument; drop --profile");
      }
      (*set_instrument)(profiler.Callback());
      profile_iterations = opt.profile_iterations > 0 ? opt.profile_iterations
                                                      : static_cast<int64_t>(samples.size());
      for (int64_t i = 0; i < profile_iterations; ++i) call();
      result = nullptr;
    } catch (const ffi::Error& e) {
      throw StageError("run", "profiling '" + opt.entry + "' failed: " + DescribeTvmError(e));
    }
    profile_json = profiler.Json();
  }

  // --- report ---------------------------------------------------------------------------------
  std::string json = "{\"status\":\"ok\",\"runner_version\":" + JsonString(kRunnerVersion);
  json += ",\"module\":" + JsonString(opt.module_path);
  json += ",\"entry\":" + JsonString(opt.entry);
  json += ",\"load_ms\":" + JsonNumber(load_ms);
  json += ",\"first_ms\":" + JsonNumber(first_ms);
  json += ",\"warmup\":" + std::to_string(opt.warmup);
  json += ",\"samples_ms\":[";
  for (size_t i = 0; i < samples.size(); ++i) {
    if (i) json += ",";
    json += JsonNumber(samples[i]);
  }
  json += "],\"peak_rss_kb\":" + std::to_string(PeakRssKb());
  json += ",\"threads\":" + std::to_string(PoolThreads());
  json += ",\"outputs\":[";
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (i) json += ",";
    json += "{\"file\":" + (outputs[i].file.empty() ? std::string("null")
                                                    : JsonString(outputs[i].file)) +
            ",\"dtype\":" + JsonString(outputs[i].dtype) +
            ",\"shape\":" + JsonShape(outputs[i].shape) + "}";
  }
  json += "],\"inputs\":" + inputs_json;
  if (opt.profile) {
    json += ",\"profile_iterations\":" + std::to_string(profile_iterations);
    json += ",\"profile\":" + profile_json;
  }
  json += "}";
  PrintJson(json);
  return 0;
}


// ---------------------------------------------------------------------------------------------
// Kernel timing (--kernels): MetaSchedule's candidates, timed as its local runner times them
// ---------------------------------------------------------------------------------------------

struct KernelArg {
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
};

KernelArg ParseKernelArg(const std::string& text) {
  size_t colon = text.find(':');
  if (colon == std::string::npos) {
    throw StageError("input", "kernel argument '" + text + "' is not DTYPE:SHAPE");
  }
  std::string dtype_name = text.substr(0, colon);
  std::string dims = text.substr(colon + 1);
  KernelArg arg;
  for (const DtypeInfo& d : Dtypes()) {
    if (dtype_name == d.name) arg.dtype = &d;
  }
  if (arg.dtype == nullptr) {
    throw StageError("input", "kernel argument '" + text + "' has unsupported dtype '" +
                                  dtype_name + "'");
  }
  if (dims != "scalar") {
    std::stringstream ss(dims);
    std::string dim;
    while (std::getline(ss, dim, 'x')) {
      if (dim.empty() || dim.size() > 18 || !std::all_of(dim.begin(), dim.end(), IsDigit)) {
        throw StageError("input", "kernel argument '" + text + "' has an unreadable shape");
      }
      arg.shape.push_back(std::atoll(dim.c_str()));
    }
  }
  int64_t numel = 0;
  if (!NumElements(arg.shape, &numel) || numel > (int64_t{1} << 40) / arg.dtype->itemsize) {
    throw StageError("input", "kernel argument '" + text + "' has an impossible shape");
  }
  return arg;
}

// Floats uniform in [-1, 1); integers and booleans 0 (an index argument stays in bounds).
void FillArgument(ffi::Tensor* tensor, const DtypeInfo& dtype, uint64_t* state) {
  int64_t numel = 0;
  std::vector<int64_t> shape(tensor->shape().begin(), tensor->shape().end());
  NumElements(shape, &numel);
  size_t bytes = static_cast<size_t>(numel) * static_cast<size_t>(dtype.itemsize);
  std::memset(tensor->data_ptr(), 0, bytes);
  if (dtype.kind != 'f') return;
  auto next = [state]() -> double {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return static_cast<double>(*state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  };
  if (dtype.itemsize == 4) {
    float* p = static_cast<float*>(tensor->data_ptr());
    for (int64_t i = 0; i < numel; ++i) p[i] = static_cast<float>(next());
  } else if (dtype.itemsize == 8) {
    double* p = static_cast<double*>(tensor->data_ptr());
    for (int64_t i = 0; i < numel; ++i) p[i] = next();
  }  // float16: zeros (no portable conversion here; times do not depend on values)
}

// One kernel of the plan: its costs in seconds per call, or an error (stage, message).
std::string TimeKernel(const Options& opt, const std::string& library,
                       const std::vector<std::string>& arg_texts, uint64_t* rng) {
  std::string head = "{\"module\":" + JsonString(library);
  try {
    std::vector<ffi::Tensor> tensors;
    for (const std::string& text : arg_texts) {
      KernelArg arg = ParseKernelArg(text);
      ffi::ShapeView view(arg.shape.data(), arg.shape.size());
      ffi::Tensor t =
          ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), view, arg.dtype->dl, DLDevice{kDLCPU, 0});
      if (t.data_ptr() == nullptr) throw StageError("input", "argument " + text + " does not fit");
      FillArgument(&t, *arg.dtype, rng);
      tensors.push_back(t);
    }
    std::string path = library;
    if (char* resolved = realpath(library.c_str(), nullptr)) {
      path = resolved;
      std::free(resolved);
    } else {
      throw StageError("load", "kernel library " + library + " does not exist");
    }
    ffi::Function fn;
    try {
      auto loader = ffi::Function::GetGlobal("ffi.Module.load_from_file.so");
      if (!loader) throw StageError("load", "the TVM runtime registered no library loader");
      ffi::Module lib = (*loader)(path, "so").cast<ffi::Module>();
      ffi::Optional<ffi::Function> main_fn = lib->GetFunction("main", true);
      if (!main_fn) throw StageError("load", library + " has no function main");
      fn = *main_fn;
    } catch (const ffi::Error& e) {
      throw StageError("load", "loading " + library + " failed: " + DescribeTvmError(e));
    }
    std::vector<ffi::AnyView> args(tensors.begin(), tensors.end());
    ffi::Any ignored;
    auto call = [&]() { fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ignored); };
    std::vector<double> costs;
    try {
      call();  // warm-up
      int64_t number = opt.number;
      for (int64_t r = 0; r < opt.repeat; ++r) {
        while (true) {
          Clock::time_point t0 = Clock::now();
          for (int64_t i = 0; i < number; ++i) call();
          double ms = ElapsedMs(t0, Clock::now());
          if (ms >= opt.min_repeat_ms || number >= (int64_t{1} << 30)) {
            costs.push_back(ms / 1000.0 / static_cast<double>(number));
            break;
          }
          // As TVM's time_evaluator: enough calls to fill the minimum, at least 1.6x more.
          double per_call = std::max(ms / static_cast<double>(number), 1e-6);
          number = std::max(static_cast<int64_t>(opt.min_repeat_ms / per_call) + 1,
                            static_cast<int64_t>(static_cast<double>(number) * 1.618) + 1);
        }
      }
    } catch (const ffi::Error& e) {
      throw StageError("run", "calling main of " + library + " failed: " + DescribeTvmError(e));
    }
    std::string json = head + ",\"status\":\"ok\",\"costs_s\":[";
    for (size_t i = 0; i < costs.size(); ++i) {
      if (i) json += ",";
      char buf[40];
      std::snprintf(buf, sizeof(buf), "%.9g", costs[i]);
      json += buf;
    }
    return json + "]}";
  } catch (const StageError& e) {
    return head + ",\"status\":\"error\",\"stage\":" + JsonString(e.stage()) +
           ",\"message\":" + JsonString(OneLine(e.message())) + "}";
  }
}

int RunKernels(const Options& opt) {
  std::ifstream plan(opt.kernels_plan);
  if (!plan) throw StageError("input", "kernel plan " + opt.kernels_plan + " cannot be opened");
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  std::string line;
  int64_t count = 0, failed = 0;
  while (std::getline(plan, line)) {
    std::stringstream ss(line);
    std::string library, arg;
    if (!(ss >> library)) continue;
    std::vector<std::string> args;
    while (ss >> arg) args.push_back(arg);
    std::string json = TimeKernel(opt, library, args, &rng);
    if (json.find("\"status\":\"error\"") != std::string::npos) ++failed;
    ++count;
    PrintJson(json);  // one line per kernel, flushed: a crash still leaves the earlier ones
  }
  PrintJson("{\"status\":\"ok\",\"runner_version\":" + JsonString(kRunnerVersion) +
            ",\"mode\":\"kernels\",\"kernels\":" + std::to_string(count) +
            ",\"failed\":" + std::to_string(failed) +
            ",\"threads\":" + std::to_string(PoolThreads()) + "}");
  return 0;
}

}  // namespace
}  // namespace edgefarm

int main(int argc, char** argv) {
  using edgefarm::ReportError;
  using edgefarm::StageError;
  edgefarm::Options opt;
  try {
    if (!edgefarm::ParseArgs(argc, argv, &opt)) {
      std::fputs(edgefarm::kUsage, stdout);
      return 0;
    }
  } catch (const StageError& e) {
    std::fputs(edgefarm::kUsage, stderr);
    return ReportError(e.stage(), e.message());
  }
  if (!opt.pid_file.empty()) {
    // Best effort: the run goes on without it (the harness then cannot end a leftover runner).
    if (FILE* f = std::fopen(opt.pid_file.c_str(), "w")) {
      std::fprintf(f, "%d\n", static_cast<int>(getpid()));
      std::fclose(f);
    }
  }
  try {
    if (opt.threads > 0) edgefarm::ConfigurePool(opt.threads);
    if (!opt.kernels_plan.empty()) return edgefarm::RunKernels(opt);
    return edgefarm::Run(opt);
  } catch (const StageError& e) {
    return ReportError(e.stage(), e.message());
  } catch (const tvm::ffi::Error& e) {
    return ReportError("run", edgefarm::DescribeTvmError(e));
  } catch (const std::bad_alloc&) {
    return ReportError("run", "out of memory; the model or its inputs do not fit on this device");
  } catch (const std::exception& e) {
    return ReportError("run", std::string("unexpected failure: ") + e.what());
  }
}
