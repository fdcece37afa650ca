package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// User events, as Pusher has them: a socket signs in as a user with what the app's user
// authentication endpoint signed (pusher.authenticateUser, Laravel's /broadcasting/user-auth),
// or with its token's subject, and from then on reads that user's channel,
// "#server-to-user-<id>", where the Pusher API's sendToUser publishes. The user channel is an
// ordinary durable channel to the engine and the store — ordered, resumable, on every node —
// that no socket may subscribe to by name: signing in is the only way in.

// signinRequest is the body of POST /v1/sockets/{socket_id}/signin.
type signinRequest struct {
	// Auth and UserData are the user authentication endpoint's answer, as it gave them.
	// Without them, the call's token (or the socket's) names the user by its sub.
	Auth     string `json:"auth,omitempty"`
	UserData string `json:"user_data,omitempty"`
	// Cursor resumes the user channel after a reconnect, like a subscription's.
	Cursor string `json:"cursor,omitempty"`
}

// signinCall is a sign-in the receiving node verified, for the socket's node to apply.
type signinCall struct {
	UserID string  `json:"user_id,omitempty"`
	Cursor *string `json:"cursor,omitempty"`
	// BySocketToken asks the owner to sign in as the subject of the token the socket was
	// opened with, which only the owner knows.
	BySocketToken bool `json:"by_socket_token,omitempty"`
}

var opSignin = socketOp[signinCall]{"signin", (*session).signin}

var (
	errUserChannel     = errorf(http.StatusForbidden, "user_channel", "#server-to-user- channels are read by signing in (POST /v1/sockets/{socket_id}/signin), not by subscribing")
	errAlreadySignedIn = errorf(http.StatusConflict, "already_signed_in", "the socket is signed in as another user: open a new socket to sign in as someone else")
	errNoSubject       = errorf(http.StatusForbidden, "no_subject", "the token has no sub to sign in as")
)

// subscribable refuses the channels no subscription may name.
func subscribable(name string) error {
	if channel.IsUser(name) {
		return errUserChannel
	}
	return nil
}

// signin is POST /v1/sockets/{socket_id}/signin. This node verifies the signature or the token;
// the socket's node joins the user channel.
func (api socketAPI) signin(c echo.Context) error {
	id, app, err := api.socketFromRequest(c, c.Param("socket_id"))
	if err != nil {
		return err
	}
	body, err := api.readBody(c)
	if err != nil {
		return err
	}
	var req signinRequest
	if err := decodeStrict(body, &req); err != nil {
		return badRequest("invalid_json", "the body must be {\"auth\",\"user_data\"[,\"cursor\"]} or {} with a token: "+jsonProblem(err))
	}
	var call signinCall
	if req.Cursor != "" {
		if _, err := store.ParseCursor(req.Cursor); err != nil {
			return badRequest("invalid_cursor", "the cursor is not one this channel's server sent")
		}
		call.Cursor = &req.Cursor
	}
	switch {
	case req.Auth != "" || req.UserData != "":
		if app.Pusher == nil {
			return errorf(http.StatusUnauthorized, "signature_unavailable", "this app has no Pusher key and secret configured")
		}
		call.UserID, err = app.Pusher.VerifyUserAuth(id, req.Auth, req.UserData)
		switch {
		case errors.Is(err, authz.ErrUserData):
			return badRequest("invalid_user_data", err.Error())
		case err != nil:
			return errorf(http.StatusUnauthorized, "invalid_signature", "the auth signature does not match this socket and user_data")
		}
	default:
		cl, err := api.callClaims(c, app)
		if err != nil {
			return err
		}
		if cl == nil {
			call.BySocketToken = true
			break
		}
		if call.UserID, err = userOfToken(cl); err != nil {
			return err
		}
	}
	return writeResult(c, opSignin.call(c.Request().Context(), api, app, id, call))
}

// userOfToken is the user a token signs in as: its subject.
func userOfToken(cl *Claims) (string, error) {
	if cl.Subject == "" {
		return "", errNoSubject
	}
	if channel.UserChannel(cl.Subject) == "" {
		return "", badRequest("invalid_user_id", "the token's sub must be characters of A-Z a-z 0-9 _ - = @ , . ; to sign in (it names the user's channel)")
	}
	return cl.Subject, nil
}

// signin runs on the socket's node: the socket becomes the user's and reads the user channel.
// Signing in again as the same user only repeats the notice; as another user it is refused.
func (ss *session) signin(ctx context.Context, call signinCall) socketResult {
	if call.BySocketToken {
		cl, err := ss.openingClaims()
		if err != nil {
			return resultOf(apiErrorOf(err))
		}
		id, err := userOfToken(cl)
		if err != nil {
			return resultOf(apiErrorOf(err))
		}
		call.UserID = id
	}
	name := channel.UserChannel(call.UserID)
	if name == "" || call.UserID == "" {
		return resultOf(badRequest("invalid_user_id", "the user id names no channel"))
	}
	var cur *store.Cursor
	if call.Cursor != nil {
		c, err := store.ParseCursor(*call.Cursor)
		if err != nil {
			return resultOf(badRequest("invalid_cursor", "the cursor is not one this channel's server sent"))
		}
		cur = &c
	}
	ss.mu.Lock()
	first := ss.user == ""
	if !first && ss.user != call.UserID {
		ss.mu.Unlock()
		return resultOf(errAlreadySignedIn)
	}
	ss.user = call.UserID
	ss.mu.Unlock()
	if err := ss.sock.Subscribe(ctx, name, cur, nil, nil); err != nil {
		if first {
			ss.mu.Lock()
			ss.user = ""
			ss.mu.Unlock()
		}
		return ss.subscribeFailed(err, name)
	}
	return jsonResult(http.StatusOK, map[string]string{"socket_id": ss.sock.ID(), "user_id": call.UserID, "channel": name})
}
