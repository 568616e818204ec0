package client

import (
	"context"
	"fmt"
	"iter"
	"math"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// Item is a vault item in plaintext, as its owner sees it. Core stores it only encrypted.
type Item struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Data      string    `json:"data"`
	Revision  int       `json:"revision"` // send it back to UpdateItem
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func itemFrom(pb *corev1.Item) Item {
	return Item{ID: pb.GetId(), Name: pb.GetName(), Data: pb.GetData(), Revision: int(pb.GetRevision()),
		CreatedAt: tsTime(pb.GetCreatedAt()), UpdatedAt: tsTime(pb.GetUpdatedAt())}
}

func tsTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// Vault calls are for people only: machines get PERMISSION_DENIED. In a zero-knowledge tenant they
// need the master key (ErrLocked without it; PERMISSION_DENIED when it is the wrong one).

// PutItem encrypts and stores a new item. A bad name or data gets INVALID_ARGUMENT naming the
// field and the limit: an empty name, a name over 1 KiB, data over 1016 KiB (1,040,384 bytes), or
// data that JSON escaping makes too large for the encryption service (quotes and backslashes count
// 2 bytes, control characters up to 6, within 1 MiB for name and data together). A name or data
// that is not UTF-8 is refused before anything is sent, with INVALID_ARGUMENT naming the field.
func (c *Client) PutItem(ctx context.Context, name, data string) (Item, error) {
	r := &corev1.CreateItemResponse{}
	cl := call{method: corev1.VaultService_CreateItem_FullMethodName, verb: "POST", path: "/v1/items", body: true,
		respField: "item", auth: true, masterKey: true}
	if err := c.invoke(ctx, cl, &corev1.CreateItemRequest{Name: name, Data: data}, r); err != nil {
		return Item{}, err
	}
	return itemFrom(r.GetItem()), nil
}

// GetItem returns one of the caller's items, decrypted. Unknown items and other people's alike
// get NOT_FOUND; a malformed id INVALID_ARGUMENT.
func (c *Client) GetItem(ctx context.Context, id string) (Item, error) {
	r := &corev1.GetItemResponse{}
	cl := call{method: corev1.VaultService_GetItem_FullMethodName, verb: "GET", path: "/v1/items/" + esc(id),
		respField: "item", auth: true, masterKey: true, ids: []pathID{{"id", id}}}
	if err := c.invoke(ctx, cl, &corev1.GetItemRequest{Id: id}, r); err != nil {
		return Item{}, err
	}
	return itemFrom(r.GetItem()), nil
}

// ListItems iterates over the caller's items, decrypted, newest first, fetching pages of up to 100
// as it goes (core sends fewer when they are large: a page holds at most 2 MiB of ciphertext). An
// error ends the iteration (yielded once, with a zero Item).
func (c *Client) ListItems(ctx context.Context) iter.Seq2[Item, error] {
	return pages(func(token string) ([]Item, string, error) {
		r := &corev1.ListItemsResponse{}
		cl := call{method: corev1.VaultService_ListItems_FullMethodName, verb: "GET", path: "/v1/items",
			query: pageQuery(100, token), auth: true, masterKey: true}
		if err := c.invoke(ctx, cl, &corev1.ListItemsRequest{PageSize: 100, PageToken: token}, r); err != nil {
			return nil, "", err
		}
		out := make([]Item, 0, len(r.GetItems()))
		for _, it := range r.GetItems() {
			out = append(out, itemFrom(it))
		}
		return out, r.GetNextPageToken(), nil
	})
}

// UpdateItem replaces an item's name and data if its revision is still revision (the one read);
// otherwise ABORTED (409) and nothing changes: read it again and redo the change. Name and data
// have PutItem's limits.
func (c *Client) UpdateItem(ctx context.Context, id string, revision int, name, data string) (Item, error) {
	if revision < 0 || revision > math.MaxInt32 {
		return Item{}, &Error{HTTPStatus: 400, Code: "INVALID_ARGUMENT", Message: fmt.Sprintf("revision: %d is not a revision", revision)}
	}
	r := &corev1.UpdateItemResponse{}
	cl := call{method: corev1.VaultService_UpdateItem_FullMethodName, verb: "PUT", path: "/v1/items/" + esc(id), body: true,
		respField: "item", auth: true, masterKey: true, ids: []pathID{{"id", id}}}
	if err := c.invoke(ctx, cl, &corev1.UpdateItemRequest{Id: id, Name: name, Data: data, Revision: int32(revision)}, r); err != nil {
		return Item{}, err
	}
	return itemFrom(r.GetItem()), nil
}

// DeleteItem deletes one of the caller's items (NOT_FOUND if there is no such item of theirs). It
// needs no master key.
func (c *Client) DeleteItem(ctx context.Context, id string) error {
	cl := call{method: corev1.VaultService_DeleteItem_FullMethodName, verb: "DELETE", path: "/v1/items/" + esc(id), auth: true,
		ids: []pathID{{"id", id}}}
	return c.invoke(ctx, cl, &corev1.DeleteItemRequest{Id: id}, &corev1.DeleteItemResponse{})
}

func pageQuery(size int, token string) url.Values {
	q := url.Values{"pageSize": {strconv.Itoa(size)}}
	if token != "" {
		q.Set("pageToken", token)
	}
	return q
}

// pages turns a page fetcher into an iterator.
func pages[T any](fetch func(token string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		token := ""
		for {
			page, next, err := fetch(token)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, v := range page {
				if !yield(v, nil) {
					return
				}
			}
			if next == "" || next == token {
				return
			}
			token = next
		}
	}
}

// Collect gathers an iterator's values, stopping at its first error.
func Collect[T any](seq iter.Seq2[T, error]) ([]T, error) {
	var out []T
	for v, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}
