/*
 * transport_udp.c - datagram listeners. One socket per listen address
 * serves both directions. ICMP errors (IP_RECVERR) come back with the
 * datagram we sent, so the transaction it belongs to fails at once
 * instead of waiting for Timer F.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


static void udp_errqueue(struct sip_listener *l)
{
	char data[65536], ctrl[512];
	struct sockaddr_storage ss;
	struct iovec iov = { data, sizeof data };
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;

	for (;;) {
		memset(&mh, 0, sizeof mh);
		mh.msg_name = &ss;
		mh.msg_namelen = sizeof ss;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctrl;
		mh.msg_controllen = sizeof ctrl;
		n = recvmsg(l->fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
		if (n < 0)
			return;
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			struct sock_extended_err *ee;
			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			ee = (struct sock_extended_err *)CMSG_DATA(cm);
			char why[96];
			sip_transport_error(why, sizeof why, (int)ee->ee_errno);
			l->ua->tpu->icmp_error(l->ua, data, (size_t)n, why);
		}
	}
}

/* Datagrams are read UDP_BATCH at a time (recvmmsg), each into a slot
 * large enough for any datagram, in a buffer of the listener's: under
 * load one system call brings several messages, and a wakeup that finds
 * fewer than a batch needs no further call to learn the socket is empty
 * (epoll, level-triggered, wakes us again for anything later). Only the
 * pages a datagram touches become resident. */
#define UDP_BATCH 8
#define UDP_SLOT 65536

static void udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sip_listener *l = w->data;
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sip_addr src[UDP_BATCH];
	int round, i, n;

	(void)loop;
	(void)revents;
	memset(mm, 0, sizeof mm);
	for (i = 0; i < UDP_BATCH; i++) {
		iov[i].iov_base = l->rx + (size_t)i * UDP_SLOT;
		iov[i].iov_len = UDP_SLOT;
		mm[i].msg_hdr.msg_name = &src[i].ss;
		mm[i].msg_hdr.msg_namelen = sizeof src[i].ss;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	/* a bounded number per wakeup keeps other watchers served under load */
	for (round = 0; round < 64 / UDP_BATCH; round++) {
		n = recvmmsg(l->fd, mm, UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* woken with nothing to read: only the error queue
				 * is pending, and epoll reports it until drained */
				if (round == 0)
					udp_errqueue(l);
				return;
			}
			if (errno == EINTR)
				continue;
			/* a pending ICMP error surfaces as ECONNREFUSED and friends */
			udp_errqueue(l);
			continue;
		}
		for (i = 0; i < n; i++) {
			size_t len = mm[i].msg_len;
			src[i].len = mm[i].msg_hdr.msg_namelen;
			mm[i].msg_hdr.msg_namelen = sizeof src[i].ss;  /* for the next round */
			if (len > l->ua->cfg.max_udp || (mm[i].msg_hdr.msg_flags & MSG_TRUNC))
				sip_ua_drop(l->ua, &src[i], "datagram larger than max_udp");
			else
				l->ua->tpu->recv(l->ua, SIP_UDP, l, NULL, &src[i], iov[i].iov_base, len);
		}
		if (n < UDP_BATCH)
			return;
	}
}

int sip_udp_open(struct sip_listener *l, char *err, size_t errlen)
{
	int fd, on = 1;
	socklen_t alen;

	fd = socket(l->addr.ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (l->addr.ss.ss_family == AF_INET6) {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
		setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &on, sizeof on);
	} else {
		setsockopt(fd, SOL_IP, IP_RECVERR, &on, sizeof on);
	}
	{
		/* a few MiB of receive buffer ride out the loop's pauses at
		 * thousands of calls a second (the kernel caps it at rmem_max
		 * unless we may force it) */
		int sz = 4 << 20;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	}
	/* the workers of `luasip -w N` share their listen ports: the kernel
	 * spreads datagrams over them by source address and port */
	if (getenv("LUASIP_WORKERS"))
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
	if (bind(fd, (struct sockaddr *)&l->addr.ss, l->addr.len) < 0)
		goto fail;
	alen = sizeof l->addr.ss;
	getsockname(fd, (struct sockaddr *)&l->addr.ss, &alen);
	l->addr.len = alen;
	l->rx = malloc((size_t)UDP_BATCH * UDP_SLOT);
	if (!l->rx) {
		errno = ENOMEM;
		goto fail;
	}
	l->fd = fd;
	ev_io_init(&l->io, udp_cb, fd, EV_READ);
	l->io.data = l;
	ev_io_start(l->ua->env->loop, &l->io);
	ev_unref(l->ua->env->loop);     /* a socket alone does not keep sip.run alive */
	return 0;
fail:
	snprintf(err, errlen, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -errno;
}

void sip_udp_close(struct sip_listener *l)
{
	if (l->fd < 0)
		return;
	ev_ref(l->ua->env->loop);
	ev_io_stop(l->ua->env->loop, &l->io);
	close(l->fd);
	l->fd = -1;
	free(l->rx);
	l->rx = NULL;
}

int sip_udp_send(struct sip_listener *l, const struct sip_addr *dst, const char *buf, size_t len)
{
	ssize_t n = sendto(l->fd, buf, len, 0, (const struct sockaddr *)&dst->ss, dst->len);

	if (n < 0) {
		int e = errno;
		if (e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH) {
			/* an earlier ICMP error was reported on this send; retry once */
			n = sendto(l->fd, buf, len, 0, (const struct sockaddr *)&dst->ss, dst->len);
			if (n >= 0)
				goto ok;
			e = errno;
		}
		return -e;
	}
ok:
	l->ua->tx++;
	sip_ua_trace(l->ua, 1, SIP_UDP, l->fd, dst, buf, len);
	return 0;
}
