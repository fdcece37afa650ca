package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// statusOf maps the net/http constants the server's source uses to their values.
var statusOf = map[string]int{
	"StatusBadRequest": http.StatusBadRequest, "StatusUnauthorized": http.StatusUnauthorized,
	"StatusForbidden": http.StatusForbidden, "StatusNotFound": http.StatusNotFound,
	"StatusMethodNotAllowed": http.StatusMethodNotAllowed, "StatusRequestTimeout": http.StatusRequestTimeout,
	"StatusConflict": http.StatusConflict, "StatusRequestEntityTooLarge": http.StatusRequestEntityTooLarge,
	"StatusUnprocessableEntity": http.StatusUnprocessableEntity, "StatusTooManyRequests": http.StatusTooManyRequests,
	"StatusInternalServerError": http.StatusInternalServerError, "StatusNotImplemented": http.StatusNotImplemented,
	"StatusBadGateway": http.StatusBadGateway, "StatusServiceUnavailable": http.StatusServiceUnavailable,
}

// sourceErrorCodes finds every (status, code) the server's source answers with: calls of
// errorf, badRequest and unprocessable with a literal code, the codes pusherAuthError picks,
// and the two parameters whose code is built from their name.
func sourceErrorCodes(t *testing.T) map[[2]string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	found := map[[2]string]string{} // (status, code) → where
	add := func(status int, code, where string) { found[[2]string{strconv.Itoa(status), code}] = where }
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if n.Name.Name == "pusherAuthError" {
					ast.Inspect(n, func(m ast.Node) bool {
						if as, ok := m.(*ast.AssignStmt); ok && len(as.Rhs) == 1 {
							if lit, ok := as.Rhs[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								code, _ := strconv.Unquote(lit.Value)
								add(http.StatusUnauthorized, code, fset.Position(lit.Pos()).String())
							}
						}
						return true
					})
				}
			case *ast.CallExpr:
				fn, ok := n.Fun.(*ast.Ident)
				if !ok {
					return true
				}
				var status int
				var codeArg ast.Expr
				switch fn.Name {
				case "badRequest":
					status, codeArg = http.StatusBadRequest, n.Args[0]
				case "unprocessable":
					status, codeArg = http.StatusUnprocessableEntity, n.Args[0]
				case "errorf":
					sel, ok := n.Args[0].(*ast.SelectorExpr)
					if x, isIdent := sel.X.(*ast.Ident); !ok || !isIdent || x.Name != "http" {
						return true // errorf(he.Code, codeForStatus(…)): Echo's own, below
					}
					if status, ok = statusOf[sel.Sel.Name]; !ok {
						t.Errorf("%s: status %s is not in statusOf", fset.Position(sel.Pos()), sel.Sel.Name)
					}
					codeArg = n.Args[1]
				default:
					return true
				}
				where := fset.Position(n.Pos()).String()
				switch a := codeArg.(type) {
				case *ast.BasicLit:
					code, _ := strconv.Unquote(a.Value)
					add(status, code, where)
				case *ast.BinaryExpr: // "invalid_"+name in durationParam and intParam
					add(status, "invalid_timeout", where)
					add(status, "invalid_limit", where)
				case *ast.Ident, *ast.SelectorExpr:
					// A code passed on (the helpers' own parameter, a batch event's error
					// re-wrapped): it was decided at a literal, which is checked there.
				default:
					t.Errorf("%s: an error code that is neither a literal nor a known expression", where)
				}
			}
			return true
		})
	}
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusBadRequest, http.StatusInternalServerError} {
		add(status, codeForStatus(status), "codeForStatus")
	}
	return found
}

func tableCodes() map[[2]string]bool {
	out := map[[2]string]bool{}
	for status, codes := range errorCodes {
		for _, c := range codes {
			out[[2]string{strconv.Itoa(status), c}] = true
		}
	}
	return out
}

// TestErrorCodesAreListed: every error the source can answer with is in errorCodes, and every
// entry of errorCodes is answered somewhere.
func TestErrorCodesAreListed(t *testing.T) {
	found := sourceErrorCodes(t)
	table := tableCodes()
	for sc, where := range found {
		if !table[sc] {
			t.Errorf("%s: %s %s is not in errorCodes", where, sc[0], sc[1])
		}
	}
	for sc := range table {
		if _, ok := found[sc]; !ok {
			t.Errorf("errorCodes lists %s %s, which no code answers with", sc[0], sc[1])
		}
	}
}

// TestErrorCodesMatchProtocol: the error tables of docs/protocol.md (rows "| <status> | …") name
// exactly the codes of errorCodes.
func TestErrorCodesMatchProtocol(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| (\\d{3}) \\| (.*) \\|$")
	parens := regexp.MustCompile(`\([^)]*\)`)
	code := regexp.MustCompile("`([a-z0-9_]+)`")
	documented := map[[2]string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		for _, c := range code.FindAllStringSubmatch(parens.ReplaceAllString(m[2], ""), -1) {
			documented[[2]string{m[1], c[1]}] = true
		}
	}
	if len(documented) == 0 {
		t.Fatal("no error table rows found in docs/protocol.md")
	}
	table := tableCodes()
	var missing, extra []string
	for sc := range table {
		if !documented[sc] {
			missing = append(missing, sc[0]+" "+sc[1])
		}
	}
	for sc := range documented {
		if !table[sc] {
			extra = append(extra, sc[0]+" "+sc[1])
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("docs/protocol.md's error tables lack: %s", strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		t.Errorf("docs/protocol.md's error tables name codes the server does not have: %s", strings.Join(extra, ", "))
	}
}
