; Rmail in batch mode against the daemon (TestRmail): it gets new mail
; from an imap:// inbox through GNU Mailutils' movemail, as Rmail does for
; such an inbox, and shows each message. RMAILDIR is a folder of its own,
; RMAILMOVEMAIL the movemail program, RMAILINBOX the inbox's URL (no
; password in it), RMAILPASS the password. Any failed check ends Emacs
; with an error.
(setq debug-on-error t)
(require 'rmail)
(defvar dir (getenv "RMAILDIR"))
(setq rmail-file-name (expand-file-name "RMAIL" dir)
      rmail-movemail-program (getenv "RMAILMOVEMAIL")
      rmail-primary-inbox-list (list (getenv "RMAILINBOX"))
      rmail-remote-password-required t
      rmail-remote-password (getenv "RMAILPASS")
      rmail-preserve-inbox nil
      rmail-enable-mime t)
(defun check (what ok)
  (unless ok (error "check failed: %s" what))
  (message "ok: %s" what))
(defun shown (n)
  "The text Rmail shows for message N."
  (rmail-show-message n)
  (with-current-buffer rmail-buffer
    (buffer-substring-no-properties (point-min) (point-max))))

(rmail)
(check "movemail is the Mailutils one" (rmail-movemail-variant-p 'mailutils))
(check (format "Rmail got 4 messages (has %d)" rmail-total-messages)
       (= rmail-total-messages 4))
;; The INBOX of the daemon: 1 plain, 2 multipart, 3 latin1, 4 nested
;; multipart.
(let ((text (shown 1)))
  (message "message 1:\n%s" text)
  (check "message 1 is the plain one" (string-match-p "Shall we meet at noon" text)))
(let ((text (shown 2)))
  (message "message 2:\n%s" text)
  (check "message 2's subject decoded" (string-match-p "Résumé attached" text))
  (check "message 2's quoted-printable part decoded"
         (string-match-p "Voilà mon CV, café compris" text))
  (check "message 2's attachment shown" (string-match-p "cv\\.pdf" text)))
(let ((text (shown 3)))
  (message "message 3:\n%s" text)
  (check "message 3's ISO-8859-1 body decoded" (string-match-p "Viele Grüße aus München" text)))
(let ((text (shown 4)))
  (message "message 4:\n%s" text)
  (check "message 4's subject decoded" (string-match-p "Grüße nested" text))
  (check "message 4's quoted-printable part decoded" (string-match-p "café crème brûlée" text))
  (check "message 4's attachment shown" (string-match-p "b\\.bin" text)))
;; Getting new mail again finds none.
(rmail-get-new-mail)
(check (format "a second fetch adds nothing (has %d)" rmail-total-messages)
       (= rmail-total-messages 4))
(with-current-buffer rmail-buffer (save-buffer))
(message "rmail: done")
