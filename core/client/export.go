package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/metadata"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// ExportOption adjusts an Export.
type ExportOption func(*exportOptions)

type exportOptions struct {
	cursor   string
	progress func(records int)
}

// ExportAfter resumes an export after the record whose cursor is given.
func ExportAfter(cursor string) ExportOption { return func(o *exportOptions) { o.cursor = cursor } }

// ExportProgress calls f after each record written, with the count so far.
func ExportProgress(f func(records int)) ExportOption {
	return func(o *exportOptions) { o.progress = f }
}

// ExportResult says what an Export wrote.
type ExportResult struct {
	Records    int    `json:"records"`
	LastCursor string `json:"lastCursor,omitempty"` // resume after it with ExportAfter
}

// Export writes the encrypted records the caller may export (a member their own items, a tenant
// admin or a machine with scope export the tenant's) to w as NDJSON, one ExportRecord per line,
// oldest first. No plaintext is ever in it; Import takes the file back unchanged. If the export
// breaks off, what was written is complete records and the result's LastCursor resumes it. A core
// that does not offer export yet answers UNIMPLEMENTED.
func (c *Client) Export(ctx context.Context, w io.Writer, opts ...ExportOption) (ExportResult, error) {
	var o exportOptions
	for _, opt := range opts {
		opt(&o)
	}
	if c.conn != nil {
		return c.exportGRPC(ctx, w, o)
	}
	hdr, _, err := c.credentials(ctx, call{auth: true})
	if err != nil {
		return ExportResult{}, err
	}
	q := url.Values{}
	if o.cursor != "" {
		q.Set("cursor", o.cursor)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/export", q, hdr, nil)
	if err != nil {
		return ExportResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return ExportResult{}, restError(resp.StatusCode, firstLine(raw))
	}
	// The gateway streams {"result":{"record":{…}}} per record, or {"error":{…}} if the stream
	// breaks off; the file gets the records only.
	var res ExportResult
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			Result *struct {
				Record json.RawMessage `json:"record"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err := dec.Decode(&line); errors.Is(err, io.EOF) {
			return res, nil
		} else if err != nil {
			if perr := ctxErr(ctx); perr != nil {
				return res, perr
			}
			return res, unreachable(c.base.Host, fmt.Errorf("export broke off after %d records: %w", res.Records, err))
		}
		if line.Error != nil {
			return res, restError(http.StatusInternalServerError, line.Error)
		}
		if line.Result == nil || len(line.Result.Record) == 0 {
			return res, fmt.Errorf("export: record %d: not a record", res.Records+1)
		}
		if err := res.write(w, line.Result.Record, o.progress); err != nil {
			return res, err
		}
	}
}

func (r *ExportResult) write(w io.Writer, record []byte, progress func(int)) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, record); err != nil {
		return fmt.Errorf("export: record %d: %w", r.Records+1, err)
	}
	var c struct {
		Cursor string `json:"cursor"`
	}
	_ = json.Unmarshal(record, &c)
	buf.WriteByte('\n')
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("export: write: %w", err)
	}
	r.Records++
	r.LastCursor = c.Cursor
	if progress != nil {
		progress(r.Records)
	}
	return nil
}

func (c *Client) exportGRPC(ctx context.Context, w io.Writer, o exportOptions) (ExportResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr, _, err := c.credentials(ctx, call{auth: true})
	if err != nil {
		return ExportResult{}, err
	}
	stream, err := corev1.NewExportServiceClient(c.conn).Export(outgoing(ctx, hdr), &corev1.ExportRequest{Cursor: o.cursor})
	if err != nil {
		return ExportResult{}, grpcError(err)
	}
	var res ExportResult
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, grpcError(err)
		}
		raw, err := marshal.Marshal(m.GetRecord())
		if err != nil {
			return res, fmt.Errorf("export: record %d: %w", res.Records+1, err)
		}
		if err := res.write(w, raw, o.progress); err != nil {
			return res, err
		}
	}
}

// ImportOption adjusts an Import.
type ImportOption func(*importOptions)

type importOptions struct{ progress func(bytes int64) }

// ImportProgress calls f as the file is read, with the bytes read so far.
func ImportProgress(f func(bytes int64)) ImportOption {
	return func(o *importOptions) { o.progress = f }
}

// ImportResult says what an Import restored.
type ImportResult struct {
	Imported  int `json:"imported"`  // records stored
	Unchanged int `json:"unchanged"` // already there, identical
}

// Import restores the records of an export read from r (tenant admins only): every record is
// stored, or none. A record altered since the export is refused (INVALID_ARGUMENT naming the
// record and its integrity); one whose item has changed since the export, ALREADY_EXISTS
// (ErrAlreadyExists) naming the record. An import that collided with a concurrent change stored
// nothing and gets ABORTED (ErrAborted): send the whole file again. Importing the same file twice
// is harmless: records already there count as Unchanged, also after a re-encryption job moved
// them to a new key version. A core that does not offer import yet answers UNIMPLEMENTED.
func (c *Client) Import(ctx context.Context, r io.Reader, opts ...ImportOption) (ImportResult, error) {
	var o importOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.progress != nil {
		r = &countingReader{r: r, f: o.progress}
	}
	if c.conn != nil {
		return c.importGRPC(ctx, r)
	}
	hdr, _, err := c.credentials(ctx, call{auth: true})
	if err != nil {
		return ImportResult{}, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/import", nil, hdr, r)
	if err != nil {
		return ImportResult{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ImportResult{}, unreachable(c.base.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return ImportResult{}, restError(resp.StatusCode, raw)
	}
	out := &corev1.ImportResponse{}
	if err := unmarshal.Unmarshal(raw, out); err != nil {
		return ImportResult{}, fmt.Errorf("decode the answer of POST /v1/import: %w", err)
	}
	return ImportResult{Imported: int(out.GetImported()), Unchanged: int(out.GetUnchanged())}, nil
}

func (c *Client) importGRPC(ctx context.Context, r io.Reader) (ImportResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr, _, err := c.credentials(ctx, call{auth: true})
	if err != nil {
		return ImportResult{}, err
	}
	stream, err := corev1.NewExportServiceClient(c.conn).Import(outgoing(ctx, hdr))
	if err != nil {
		return ImportResult{}, grpcError(err)
	}
	dec := json.NewDecoder(bufio.NewReader(r))
	for n := 1; ; n++ {
		var value json.RawMessage
		if err := dec.Decode(&value); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			cancel() // core stores nothing of a cancelled import
			return ImportResult{}, fmt.Errorf("import: record %d: not JSON: %w; nothing was imported", n, err)
		}
		rec, err := importRecord(value)
		if err != nil {
			cancel()
			return ImportResult{}, fmt.Errorf("import: record %d: %w; nothing was imported", n, err)
		}
		if err := stream.Send(&corev1.ImportRequest{Record: rec}); err != nil {
			if errors.Is(err, io.EOF) {
				break // core ended the call: CloseAndRecv says why
			}
			return ImportResult{}, grpcError(err)
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return ImportResult{}, grpcError(err)
	}
	return ImportResult{Imported: int(out.GetImported()), Unchanged: int(out.GetUnchanged())}, nil
}

// importRecord reads one value of an export file: a bare record (as Export writes), an import
// request {"record":…}, or a line of the REST stream {"result":{"record":…}}.
func importRecord(value json.RawMessage) (*corev1.ExportRecord, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil || top == nil {
		return nil, errors.New("not a JSON object")
	}
	raw := value
	switch {
	case top["error"] != nil:
		return nil, errors.New("the export ended with an error here: the file is incomplete")
	case top["result"] != nil && len(top) == 1:
		var result map[string]json.RawMessage
		if err := json.Unmarshal(top["result"], &result); err != nil || result["record"] == nil {
			return nil, errors.New(`result: want {"record":{…}}`)
		}
		raw = result["record"]
	case top["record"] != nil && len(top) == 1:
		raw = top["record"]
	}
	rec := &corev1.ExportRecord{}
	if err := unmarshalStrict.Unmarshal(raw, rec); err != nil {
		return nil, fmt.Errorf("not an export record: %w", err)
	}
	return rec, nil
}

func outgoing(ctx context.Context, hdr map[string]string) context.Context {
	md := metadata.MD{}
	for k, v := range hdr {
		md.Set(strings.ToLower(k), v)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

type countingReader struct {
	r io.Reader
	n int64
	f func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.f(c.n)
	}
	return n, err
}
