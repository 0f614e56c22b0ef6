; Gnus, nnimap back end, in batch mode against the daemon (TestGnus):
; GNUSDIR is a folder of its own with the authinfo file, GNUSPORT the
; IMAP port on 127.0.0.1. Any failed check ends Emacs with an error.
(setq debug-on-error t
      nsm-trust-local-network t)
(require 'gnus)
(require 'nnimap)
(defvar dir (getenv "GNUSDIR"))
(setq gnus-home-directory dir
      gnus-directory (expand-file-name "News" dir)
      message-directory (expand-file-name "Mail" dir)
      gnus-startup-file (expand-file-name "newsrc" dir)
      gnus-init-file nil
      gnus-use-dribble-file nil
      gnus-save-newsrc-file nil
      gnus-interactive-exit nil
      gnus-novice-user nil
      gnus-expert-user t
      gnus-subscribe-newsgroup-method 'gnus-subscribe-alphabetically
      auth-sources (list (expand-file-name "authinfo" dir))
      nnimap-record-commands t
      gnus-select-method `(nnimap "cspool" (nnimap-address "127.0.0.1")
                                  (nnimap-server-port ,(string-to-number (getenv "GNUSPORT")))
                                  (nnimap-stream plain) (nnimap-user "alice")
                                  ;; Fetch only the text parts of an
                                  ;; article: BODY.PEEK[HEADER] and
                                  ;; BODY.PEEK[n] of each text part.
                                  (nnimap-fetch-partial-articles "text/")))
(defun check (what ok)
  (unless ok (error "check failed: %s" what))
  (message "ok: %s" what))

(gnus)
(let ((groups (mapcar #'car gnus-newsrc-alist)))
  (message "groups: %S" groups)
  (dolist (g '("INBOX" "Archive" "Work" "Work/2025" "Bills & Tax" "Grüße"))
    (check (format "group %s listed" g) (member g groups))))

;; INBOX: 1 plain, 2 nested multipart, 3 latin1, 4 multipart.
(gnus-group-read-group t t "INBOX")
(set-buffer gnus-summary-buffer)
(check "summary holds articles 1 to 4"
       (equal (mapcar #'mail-header-number gnus-newsgroup-headers) '(1 2 3 4)))
(check "subject of article 2 decoded"
       (string-match-p "Grüße nested"
                       (mail-header-subject (gnus-summary-article-header 2))))
(gnus-summary-select-article nil t nil 2)
(with-current-buffer gnus-article-buffer
  (message "article 2:\n%s" (buffer-string))
  (check "article 2 shows its quoted-printable part decoded"
         (string-match-p "café crème" (buffer-string))))
(gnus-summary-mark-article 2 gnus-ticked-mark)
(gnus-summary-mark-article 4 gnus-read-mark)
(gnus-summary-goto-subject 1)
(gnus-summary-move-article nil "Grüße")
(gnus-summary-goto-subject 3)
(gnus-summary-delete-article)
(gnus-summary-exit)

;; The moved message, read in its new group.
(gnus-group-read-group t t "Grüße")
(set-buffer gnus-summary-buffer)
(check "Grüße holds the moved message"
       (equal (mapcar (lambda (h) (mail-header-subject h)) gnus-newsgroup-headers)
              '("Lunch on Friday")))
(gnus-summary-exit)
(gnus-group-exit)
(message "gnus: done")
