# Build and install soundgate. `make` builds release binaries with cargo; `make install`
# copies what is built (it never builds, so `sudo make install` after `make` runs no cargo as
# root). DESTDIR and PREFIX are honoured; tests/install.rs checks the tree file by file.
#
#   make && sudo make install              # into /usr/local
#   make PREFIX=/usr && make install PREFIX=/usr DESTDIR=/tmp/pkg
#   sudo make uninstall                    # removes exactly what install put there

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/soundgate
# systemd's vendor directories live under $(PREFIX)/lib (/usr/lib/systemd/system for /usr).
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# Where the built binaries are.
BUILDDIR ?= target/release
CARGO ?= cargo
INSTALL ?= install

BINARIES := soundgated sgcat sgctl sgtop
MAN1 := sgcat.1 sgctl.1 sgtop.1
MAN5 := soundgate.toml.5
MAN7 := soundgate-security.7
MAN8 := soundgated.8
COMPLETING := sgcat sgctl

.PHONY: all build install uninstall check-built

all: build

build:
	$(CARGO) build --release --workspace --locked

check-built:
	@for b in $(BINARIES); do \
	  test -x "$(BUILDDIR)/$$b" || { echo "$(BUILDDIR)/$$b is missing: run make first" >&2; exit 1; }; \
	done

install: check-built
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)"
	for b in $(BINARIES); do $(INSTALL) -m 0755 "$(BUILDDIR)/$$b" "$(DESTDIR)$(BINDIR)/$$b"; done
	$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(MANDIR)/man5" "$(DESTDIR)$(MANDIR)/man7" "$(DESTDIR)$(MANDIR)/man8"
	for m in $(MAN1); do $(INSTALL) -m 0644 "man/$$m" "$(DESTDIR)$(MANDIR)/man1/$$m"; done
	for m in $(MAN5); do $(INSTALL) -m 0644 "man/$$m" "$(DESTDIR)$(MANDIR)/man5/$$m"; done
	for m in $(MAN7); do $(INSTALL) -m 0644 "man/$$m" "$(DESTDIR)$(MANDIR)/man7/$$m"; done
	for m in $(MAN8); do $(INSTALL) -m 0644 "man/$$m" "$(DESTDIR)$(MANDIR)/man8/$$m"; done
	$(INSTALL) -d "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" "$(DESTDIR)$(TMPFILESDIR)"
	sed 's|@BINDIR@|$(BINDIR)|g' dist/soundgated.service > "$(DESTDIR)$(UNITDIR)/soundgated.service"
	chmod 0644 "$(DESTDIR)$(UNITDIR)/soundgated.service"
	$(INSTALL) -m 0644 dist/soundgate.sysusers "$(DESTDIR)$(SYSUSERSDIR)/soundgate.conf"
	$(INSTALL) -m 0644 dist/soundgate.tmpfiles "$(DESTDIR)$(TMPFILESDIR)/soundgate.conf"
	$(INSTALL) -d "$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(FISHCOMPDIR)"
	"$(BUILDDIR)/sgctl" completions bash > "$(DESTDIR)$(BASHCOMPDIR)/sgctl"
	"$(BUILDDIR)/sgctl" completions zsh > "$(DESTDIR)$(ZSHCOMPDIR)/_sgctl"
	"$(BUILDDIR)/sgctl" completions fish > "$(DESTDIR)$(FISHCOMPDIR)/sgctl.fish"
	"$(BUILDDIR)/sgcat" --completions bash > "$(DESTDIR)$(BASHCOMPDIR)/sgcat"
	"$(BUILDDIR)/sgcat" --completions zsh > "$(DESTDIR)$(ZSHCOMPDIR)/_sgcat"
	"$(BUILDDIR)/sgcat" --completions fish > "$(DESTDIR)$(FISHCOMPDIR)/sgcat.fish"
	chmod 0644 "$(DESTDIR)$(BASHCOMPDIR)/sgctl" "$(DESTDIR)$(ZSHCOMPDIR)/_sgctl" "$(DESTDIR)$(FISHCOMPDIR)/sgctl.fish" \
	  "$(DESTDIR)$(BASHCOMPDIR)/sgcat" "$(DESTDIR)$(ZSHCOMPDIR)/_sgcat" "$(DESTDIR)$(FISHCOMPDIR)/sgcat.fish"
	$(INSTALL) -d "$(DESTDIR)$(DOCDIR)"
	$(INSTALL) -m 0644 dist/soundgate.toml.example "$(DESTDIR)$(DOCDIR)/soundgate.toml.example"

uninstall:
	for b in $(BINARIES); do rm -f "$(DESTDIR)$(BINDIR)/$$b"; done
	for m in $(MAN1); do rm -f "$(DESTDIR)$(MANDIR)/man1/$$m"; done
	for m in $(MAN5); do rm -f "$(DESTDIR)$(MANDIR)/man5/$$m"; done
	for m in $(MAN7); do rm -f "$(DESTDIR)$(MANDIR)/man7/$$m"; done
	for m in $(MAN8); do rm -f "$(DESTDIR)$(MANDIR)/man8/$$m"; done
	rm -f "$(DESTDIR)$(UNITDIR)/soundgated.service"
	rm -f "$(DESTDIR)$(SYSUSERSDIR)/soundgate.conf" "$(DESTDIR)$(TMPFILESDIR)/soundgate.conf"
	for c in $(COMPLETING); do \
	  rm -f "$(DESTDIR)$(BASHCOMPDIR)/$$c" "$(DESTDIR)$(ZSHCOMPDIR)/_$$c" "$(DESTDIR)$(FISHCOMPDIR)/$$c.fish"; \
	done
	rm -f "$(DESTDIR)$(DOCDIR)/soundgate.toml.example"
	-rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null
