/* serve_saved_model: runs one request against a SavedModel through the
 * TensorFlow C API, the session-based loader that TF Serving builds on
 * (`TF_LoadSessionFromSavedModel` with the tag `serve`, then
 * `TF_SessionRun`). No Python is involved: the tests use it to prove that
 * an export serves without our code (see tests/c_loader_harness.py).
 *
 * Usage: serve_saved_model SAVED_MODEL_DIR REQUEST_FILE RESPONSE_FILE
 *
 * Exit status 0: the response file holds the fetched tensors. Exit status
 * 1: one line `error: <message>` on stderr (a TensorFlow error, with its
 * `TF_Message`, or a malformed request); the response file is not written.
 * Exit status 2: wrong usage.
 *
 * File format. All integers are little-endian; a "string" is a u32 byte
 * count followed by that many bytes (no terminator).
 *
 *   request  := "TFCREQ01" u32 n_feeds feed{n_feeds}
 *                          u32 n_fetches string{n_fetches}
 *   feed     := string tensor_name tensor
 *   response := "TFCRES01" u32 n_fetches tensor{n_fetches}
 *   tensor   := u32 dtype u32 rank i64 dims{rank} payload
 *   payload  := u64 n_bytes byte{n_bytes}           (fixed-size dtypes)
 *             | (u64 n_bytes byte{n_bytes}){n_elements}   (TF_STRING)
 *
 * `tensor_name` is a graph tensor, `operation:index` (`:0` if no index),
 * as a signature_def's TensorInfo names it. `dtype` is the `TF_DataType`
 * value (the same numbers as the DataType proto: 1 float32, 2 float64,
 * 3 int32, 7 string, 9 int64, 10 bool, ...). The data of fixed-size dtypes
 * is the elements in row-major order, `n_bytes` = elements * dtype size;
 * a string tensor has, for each element in row-major order, its byte
 * count and bytes. A dimension of 0 is allowed (an empty batch): it has
 * no data, and its outputs are empty tensors.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

#define REQUEST_MAGIC "TFCREQ01"
#define RESPONSE_MAGIC "TFCRES01"
#define MAX_RANK 64

/* Prints `error: <message>` and exits 1: the one way this program fails
 * after its arguments are checked. */
static void fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("error: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  exit(1);
}

static void fail_on_status(TF_Status *status) {
  if (TF_GetCode(status) != TF_OK) {
    /* TF's messages may span lines; the caller reads one line. */
    const char *message = TF_Message(status);
    char *line = malloc(strlen(message) + 1);
    size_t n = 0;
    if (line == NULL) fail("out of memory");
    for (const char *c = message; *c; ++c) line[n++] = (*c == '\n') ? ' ' : *c;
    line[n] = '\0';
    fail("%s", line);
  }
}

static void *checked_malloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p == NULL) fail("out of memory (%zu bytes)", size);
  return p;
}

/* ---- Reading the request: a bounds-checked cursor over the file. ---- */

typedef struct {
  const unsigned char *data;
  size_t size;
  size_t pos;
} Reader;

static const unsigned char *take(Reader *r, size_t n, const char *what) {
  if (n > r->size - r->pos) {
    fail("malformed request: truncated while reading %s", what);
  }
  const unsigned char *p = r->data + r->pos;
  r->pos += n;
  return p;
}

static uint64_t read_le(Reader *r, size_t n, const char *what) {
  const unsigned char *p = take(r, n, what);
  uint64_t value = 0;
  for (size_t i = 0; i < n; ++i) value |= (uint64_t)p[i] << (8 * i);
  return value;
}

static uint32_t read_u32(Reader *r, const char *what) {
  return (uint32_t)read_le(r, 4, what);
}

static uint64_t read_u64(Reader *r, const char *what) {
  return read_le(r, 8, what);
}

static char *read_string(Reader *r, const char *what) {
  uint32_t n = read_u32(r, what);
  const unsigned char *p = take(r, n, what);
  char *s = checked_malloc((size_t)n + 1);
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static unsigned char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) fail("cannot open %s: %s", path, strerror(errno));
  size_t capacity = 1 << 16, n = 0;
  unsigned char *data = checked_malloc(capacity);
  for (;;) {
    n += fread(data + n, 1, capacity - n, f);
    if (n < capacity) break;
    capacity *= 2;
    unsigned char *grown = realloc(data, capacity);
    if (grown == NULL) fail("out of memory reading %s", path);
    data = grown;
  }
  if (ferror(f)) fail("cannot read %s", path);
  fclose(f);
  *size = n;
  return data;
}

/* `operation:index` of `graph` as a TF_Output. */
static TF_Output find_output(TF_Graph *graph, const char *tensor_name) {
  char *name = checked_malloc(strlen(tensor_name) + 1);
  strcpy(name, tensor_name);
  long index = 0;
  char *colon = strrchr(name, ':');
  if (colon != NULL) {
    char *end;
    errno = 0;
    index = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || index < 0) {
      fail("bad tensor name '%s' (expected operation:index)", tensor_name);
    }
    *colon = '\0';
  }
  TF_Operation *op = TF_GraphOperationByName(graph, name);
  if (op == NULL) fail("no operation '%s' in the graph", name);
  if (index >= TF_OperationNumOutputs(op)) {
    fail("operation '%s' has %d outputs, no output %ld", name,
         TF_OperationNumOutputs(op), index);
  }
  free(name);
  TF_Output output = {op, (int)index};
  return output;
}

/* Reads one tensor (dtype, rank, dims, payload) into a new TF_Tensor. */
static TF_Tensor *read_tensor(Reader *r, const char *feed_name) {
  TF_DataType dtype = (TF_DataType)read_u32(r, "a dtype");
  uint32_t rank = read_u32(r, "a rank");
  if (rank > MAX_RANK) fail("feed '%s': rank %u is too large", feed_name, rank);
  int64_t dims[MAX_RANK];
  uint64_t elements = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    dims[i] = (int64_t)read_u64(r, "a dimension");
    if (dims[i] < 0) {
      fail("feed '%s': negative dimension %lld", feed_name,
           (long long)dims[i]);
    }
    if (dims[i] != 0 && elements > UINT64_MAX / (uint64_t)dims[i]) {
      fail("feed '%s': too many elements", feed_name);
    }
    elements *= (uint64_t)dims[i];
  }
  if (dtype == TF_STRING) {
    if (elements > (r->size - r->pos) / 8) {
      fail("malformed request: feed '%s' has more strings than bytes",
           feed_name);
    }
    TF_Tensor *tensor = TF_AllocateTensor(dtype, dims, (int)rank,
                                          elements * sizeof(TF_TString));
    if (tensor == NULL) fail("feed '%s': cannot allocate", feed_name);
    TF_TString *strings = (TF_TString *)TF_TensorData(tensor);
    for (uint64_t i = 0; i < elements; ++i) TF_TString_Init(&strings[i]);
    for (uint64_t i = 0; i < elements; ++i) {
      uint64_t n = read_u64(r, "a string's size");
      if (n > r->size - r->pos) {
        fail("malformed request: truncated while reading a string");
      }
      const unsigned char *p = take(r, (size_t)n, "a string");
      TF_TString_Copy(&strings[i], (const char *)p, (size_t)n);
    }
    return tensor;
  }
  size_t item = TF_DataTypeSize(dtype);
  if (item == 0) {
    fail("feed '%s': dtype %u is not supported", feed_name, (unsigned)dtype);
  }
  uint64_t n_bytes = read_u64(r, "a payload size");
  if (elements > UINT64_MAX / item || n_bytes != elements * item) {
    fail("malformed request: feed '%s' has %llu bytes for %llu elements of "
         "%zu bytes", feed_name, (unsigned long long)n_bytes,
         (unsigned long long)elements, item);
  }
  const unsigned char *p = take(r, (size_t)n_bytes, "tensor data");
  TF_Tensor *tensor = TF_AllocateTensor(dtype, dims, (int)rank, n_bytes);
  if (tensor == NULL) fail("feed '%s': cannot allocate", feed_name);
  if (n_bytes) memcpy(TF_TensorData(tensor), p, (size_t)n_bytes);
  return tensor;
}

/* Frees the heap copies of a string tensor's elements (TF_DeleteTensor
 * frees the buffer only). */
static void delete_tensor(TF_Tensor *tensor) {
  if (tensor == NULL) return;
  if (TF_TensorType(tensor) == TF_STRING) {
    TF_TString *strings = (TF_TString *)TF_TensorData(tensor);
    int64_t n = TF_TensorElementCount(tensor);
    for (int64_t i = 0; i < n; ++i) TF_TString_Dealloc(&strings[i]);
  }
  TF_DeleteTensor(tensor);
}

/* ---- Writing the response. ---- */

static void write_le(FILE *f, uint64_t value, size_t n) {
  unsigned char bytes[8];
  for (size_t i = 0; i < n; ++i) bytes[i] = (unsigned char)(value >> (8 * i));
  if (fwrite(bytes, 1, n, f) != n) fail("cannot write the response");
}

static void write_bytes(FILE *f, const void *data, size_t n) {
  if (n && fwrite(data, 1, n, f) != n) fail("cannot write the response");
}

static void write_tensor(FILE *f, const TF_Tensor *tensor, const char *name) {
  TF_DataType dtype = TF_TensorType(tensor);
  int rank = TF_NumDims(tensor);
  write_le(f, (uint32_t)dtype, 4);
  write_le(f, (uint32_t)rank, 4);
  for (int i = 0; i < rank; ++i) write_le(f, (uint64_t)TF_Dim(tensor, i), 8);
  int64_t elements = TF_TensorElementCount(tensor);
  if (dtype == TF_STRING) {
    const TF_TString *strings = (const TF_TString *)TF_TensorData(tensor);
    for (int64_t i = 0; i < elements; ++i) {
      size_t n = TF_TString_GetSize(&strings[i]);
      write_le(f, n, 8);
      write_bytes(f, TF_TString_GetDataPointer(&strings[i]), n);
    }
    return;
  }
  size_t item = TF_DataTypeSize(dtype);
  if (item == 0) {
    fail("fetch '%s': dtype %u cannot be written", name, (unsigned)dtype);
  }
  size_t n_bytes = TF_TensorByteSize(tensor);
  if (n_bytes != (size_t)elements * item) {
    fail("fetch '%s': %zu bytes for %lld elements", name, n_bytes,
         (long long)elements);
  }
  write_le(f, n_bytes, 8);
  write_bytes(f, TF_TensorData(tensor), n_bytes);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr,
            "usage: %s SAVED_MODEL_DIR REQUEST_FILE RESPONSE_FILE\n",
            argv[0]);
    return 2;
  }
  const char *export_dir = argv[1];
  size_t request_size;
  unsigned char *request = read_file(argv[2], &request_size);
  Reader reader = {request, request_size, 0};
  if (memcmp(take(&reader, 8, "the magic"), REQUEST_MAGIC, 8) != 0) {
    fail("malformed request: bad magic (expected %s)", REQUEST_MAGIC);
  }

  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  TF_Graph *graph = TF_NewGraph();
  const char *tags[] = {"serve"};
  TF_Session *session = TF_LoadSessionFromSavedModel(
      options, NULL, export_dir, tags, 1, graph, NULL, status);
  fail_on_status(status);

  uint32_t n_feeds = read_u32(&reader, "the number of feeds");
  if (n_feeds > request_size) fail("malformed request: too many feeds");
  TF_Output *inputs = checked_malloc(n_feeds * sizeof(TF_Output));
  TF_Tensor **input_values = checked_malloc(n_feeds * sizeof(TF_Tensor *));
  for (uint32_t i = 0; i < n_feeds; ++i) {
    char *name = read_string(&reader, "a feed's name");
    inputs[i] = find_output(graph, name);
    input_values[i] = read_tensor(&reader, name);
    free(name);
  }
  uint32_t n_fetches = read_u32(&reader, "the number of fetches");
  if (n_fetches > request_size) fail("malformed request: too many fetches");
  TF_Output *outputs = checked_malloc(n_fetches * sizeof(TF_Output));
  char **fetch_names = checked_malloc(n_fetches * sizeof(char *));
  for (uint32_t i = 0; i < n_fetches; ++i) {
    fetch_names[i] = read_string(&reader, "a fetch's name");
    outputs[i] = find_output(graph, fetch_names[i]);
  }
  if (reader.pos != reader.size) {
    fail("malformed request: %zu trailing bytes", reader.size - reader.pos);
  }

  TF_Tensor **output_values = checked_malloc(n_fetches * sizeof(TF_Tensor *));
  for (uint32_t i = 0; i < n_fetches; ++i) output_values[i] = NULL;
  TF_SessionRun(session, NULL, inputs, input_values, (int)n_feeds, outputs,
                output_values, (int)n_fetches, NULL, 0, NULL, status);
  fail_on_status(status);

  FILE *response = fopen(argv[3], "wb");
  if (response == NULL) fail("cannot open %s: %s", argv[3], strerror(errno));
  write_bytes(response, RESPONSE_MAGIC, 8);
  write_le(response, n_fetches, 4);
  for (uint32_t i = 0; i < n_fetches; ++i) {
    if (output_values[i] == NULL) fail("fetch '%s' is null", fetch_names[i]);
    write_tensor(response, output_values[i], fetch_names[i]);
  }
  if (fclose(response) != 0) fail("cannot write %s", argv[3]);

  for (uint32_t i = 0; i < n_fetches; ++i) {
    TF_DeleteTensor(output_values[i]);
    free(fetch_names[i]);
  }
  for (uint32_t i = 0; i < n_feeds; ++i) delete_tensor(input_values[i]);
  TF_CloseSession(session, status);
  fail_on_status(status);
  TF_DeleteSession(session, status);
  fail_on_status(status);
  TF_DeleteGraph(graph);
  TF_DeleteSessionOptions(options);
  TF_DeleteStatus(status);
  free(output_values);
  free(fetch_names);
  free(outputs);
  free(input_values);
  free(inputs);
  free(request);
  return 0;
}
