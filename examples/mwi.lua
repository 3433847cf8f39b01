-- usage: luasip examples/mwi.lua [listen] [-d mail_dir] [-i secs]
--
-- A message-waiting notifier (RFC 3842): the lamp on a desk phone, the
-- envelope in a softphone. A phone SUBSCRIBEs to its mailbox with event
-- message-summary; it gets the counts at once, then a NOTIFY each time
-- they change, until it unsubscribes or the subscription expires. Other
-- event packages get 489 Bad Event, a user without a mailbox 404.
--
-- The mailboxes are directories, one per user, under mail_dir:
--
--   mail_dir/alice/*.wav        new messages (examples/voicemail.lua's
--                               recordings: -o mail_dir/alice)
--   mail_dir/alice/old/*.wav    messages already heard
--
-- mail_dir is read again every few seconds: a recording that lands there,
-- or a file moved to old/, is a change, and alice's phones are told.
--
--   mkdir -p /tmp/mail/alice
--   luasip examples/mwi.lua udp:127.0.0.1:5060 -d /tmp/mail
--   then subscribe sip:alice@127.0.0.1:5060 to message-summary (a phone's
--   "voicemail" or "MWI" setting), and: touch /tmp/mail/alice/msg1.wav
--
--   -d dir     the mailboxes (default /tmp/mail)
--   -i secs    how often mail_dir is read (default 2)
--
-- A body as phones read it (application/simple-message-summary):
--   Messages-Waiting: yes
--   Message-Account: sip:alice@127.0.0.1:5060
--   Voice-Message: 1/0
--
-- One line is printed per change of a mailbox and per NOTIFY sent, e.g.
--   mwi: alice has 1 new, 0 old
--   mwi: notify sip:alice@127.0.0.1:5060 1/0 to sip:phone@127.0.0.1: ok

local sip = require "sip"

local USAGE = "usage: luasip examples/mwi.lua [listen] [-d mail_dir] [-i secs]"
local EVENT, CONTENT_TYPE = "message-summary", "application/simple-message-summary"
local MAX_EXPIRES = 3600

local listen, dir, interval = "udp:127.0.0.1:5060", "/tmp/mail", 2
do
  local argv, i = arg or {}, 1
  while i <= #argv do
    local a = argv[i]
    local v = argv[i + 1]
    if a == "-d" and v then dir, i = v, i + 1
    elseif a == "-i" and tonumber(v) and tonumber(v) > 0 then interval, i = tonumber(v), i + 1
    elseif a:match("^%a+:.+:%d+$") then listen = a
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
  dir = dir:match("^(.-)/*$")
end

local ua = assert(sip.ua{ listen = listen, user_agent = "luasip-mwi" })
print("mwi: listening on " .. ua:address() .. ", mailboxes in " .. dir)

-- The mailboxes on disk: counts[user] = { new =, old = } for each
-- directory under dir, empty ones included. (find is run and waited for:
-- quick on a mailbox tree, and simpler than a directory library.)
local function scan()
  local counts = {}
  local p = io.popen("find '" .. dir:gsub("'", "'\\''") .. "' -mindepth 1 -maxdepth 3 2>/dev/null")
  for path in p:lines() do
    local rest = path:sub(#dir + 2)
    local user, file = rest:match("^([^/]+)/?(.*)$")
    if user and not user:match("^%.") then
      local c = counts[user] or { new = 0, old = 0 }
      counts[user] = c
      if file:match("^[^/]+%.wav$") then c.new = c.new + 1
      elseif file:match("^old/[^/]+%.wav$") then c.old = c.old + 1 end
    end
  end
  p:close()
  return counts
end

local mailboxes = scan()

-- The summary of a mailbox, for the account (the URI subscribed to).
local function summary(account, c)
  return "Messages-Waiting: " .. (c.new > 0 and "yes" or "no") .. "\r\n" ..
         "Message-Account: " .. account .. "\r\n" ..
         "Voice-Message: " .. c.new .. "/" .. c.old .. "\r\n"
end

-- Watchers, by user: watchers[user] = { [sub] = account }, from the
-- moment a subscription is accepted until it ends.
local watchers = {}

local function report(account, c, sub, ok, err)
  print(string.format("mwi: notify %s %d/%d to %s: %s", account, c.new, c.old, sub.request.from_uri,
                      ok and "ok" or ("failed (" .. tostring(err) .. ")")))
end

-- The user a SUBSCRIBE is about, and the account its summary names: the
-- Request-URI without its parameters.
local function mailbox_of(uri)
  local account = uri:match("^([^;?]*)") or uri
  return account:match("^sips?:([^@:]+)@"), account
end

ua:on("SUBSCRIBE", function(sub)
  if sub.event ~= EVENT then return 489 end
  local user, account = mailbox_of(sub.request.uri)
  local c = user and mailboxes[user]
  if not c then return 404 end
  local set = watchers[user] or {}
  watchers[user] = set
  set[sub] = account        -- watched before the first NOTIFY: a change meanwhile follows it
  local ok, err = sub:accept{ body = summary(account, c), content_type = CONTENT_TYPE,
                              expires = math.min(sub.expires, MAX_EXPIRES) }
  report(account, c, sub, ok, err)
  local reason = sub:wait()
  set[sub] = nil
  print("mwi: " .. sub.request.from_uri .. " stopped watching " .. account .. " (" .. tostring(reason) .. ")")
end)

-- A mailbox that changed: a NOTIFY to each of its watchers, each in a
-- coroutine of its own (a phone slow to answer delays no other).
local function changed(user, c)
  print(string.format("mwi: %s has %d new, %d old", user, c.new, c.old))
  for sub, account in pairs(watchers[user] or {}) do
    sip.spawn(function()
      local ok, err = sub:notify{ body = summary(account, c), content_type = CONTENT_TYPE }
      report(account, c, sub, ok, err)
    end)
  end
end

-- A mailbox that is gone: its subscriptions end (reason noresource).
local function removed(user)
  print("mwi: " .. user .. " has no mailbox any more")
  for sub in pairs(watchers[user] or {}) do
    sip.spawn(function() sub:terminate{ reason = "noresource" } end)
  end
end

-- Read the mailboxes again, every `interval` seconds, and tell who watches.
while true do
  sip.sleep(interval)
  local now = scan()
  for user, c in pairs(now) do
    local before = mailboxes[user]
    if not before or before.new ~= c.new or before.old ~= c.old then changed(user, c) end
  end
  for user in pairs(mailboxes) do
    if not now[user] then removed(user) end
  end
  mailboxes = now
end
