//! TLS sessions without I/O, for connections over the kernel's TCP stack: the client side of
//! the node's connections to the API server, and the server side of its kubelet endpoint.
//!
//! [`TlsConfig`] turns a PEM bundle of trusted CA certificates, a wall clock and a source
//! of random bytes into a rustls client configuration (TLS 1.3 and 1.2, the pure-Rust
//! RustCrypto provider); [`ServerTlsConfig`] does the same for a server with its own
//! certificate and key that accepts only clients whose certificate chains to the CA bundle.
//! A [`Session`] is one connection, a [`TlsSession`] (client) or a [`TlsServerSession`]:
//! the caller moves bytes between it and a TCP socket ([`Session::feed`] what was read,
//! [`Session::take_outgoing`] what to write) and exchanges plaintext with
//! [`Session::write`] and [`Session::read`]. Every buffer it keeps is bounded, so a hostile server cannot make
//! it grow without end: what does not fit is refused (`feed` takes fewer bytes, `write`
//! accepts fewer) or, when it can never fit, is a [`TlsError`].
//!
//! Inside it drives rustls' unbuffered connection over an incoming buffer it owns.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::{CryptoProvider, GetRandomFailed, SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, CommonState, ProtocolVersion, RootCertStore, ServerConfig};

/// The largest TLS record on the wire: a 5-byte header and at most 2^14 + 2048 bytes of
/// ciphertext (TLS 1.2's limit; TLS 1.3's is 2^14 + 256).
pub const MAX_RECORD: usize = 5 + 16384 + 2048;

/// How many received bytes a session holds at most: a handshake message of up to 64 KiB
/// (rustls' own limit) still being assembled, plus one record.
pub const INCOMING_LIMIT: usize = 64 * 1024 + MAX_RECORD;

/// How much decrypted data a session holds for [`TlsSession::read`] before it stops
/// decrypting (and [`TlsSession::feed`] takes fewer bytes).
pub const PLAINTEXT_LIMIT: usize = 64 * 1024;

/// How many bytes [`TlsSession::write`] keeps at most, queued plaintext and encrypted bytes
/// not yet taken together.
pub const WRITE_LIMIT: usize = 64 * 1024;

/// A source of random bytes: fills the buffer, or fails (never with predictable bytes).
pub type RandomFill = fn(&mut [u8]) -> Result<(), ()>;

/// Why TLS could not be set up or a session failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsError {
    /// The CA bundle is not well-formed PEM.
    Pem,
    /// The CA bundle holds no CERTIFICATE block.
    NoCertificates,
    /// A CA certificate of the bundle was refused as a trust anchor.
    BadCaCertificate,
    /// The server name is neither a DNS name nor an IP address.
    BadServerName,
    /// A server's own certificate chain or private key is unusable; why.
    BadIdentity(&'static str),
    /// rustls failed: the configuration, the handshake (e.g. a certificate problem) or a
    /// record from the peer.
    Tls(rustls::Error),
    /// The peer sent more than [`INCOMING_LIMIT`] bytes that could not be processed.
    IncomingOverflow,
    /// Encrypting failed: the session's keys are spent.
    EncryptExhausted,
    /// The session was closed by [`TlsSession::close`]: nothing more can be written.
    Closed,
    /// rustls did not behave as its interface says.
    Internal(&'static str),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem => f.write_str("CA bundle: malformed PEM"),
            TlsError::NoCertificates => f.write_str("CA bundle: no certificate"),
            TlsError::BadCaCertificate => {
                f.write_str("CA bundle: a certificate is not a usable trust anchor")
            }
            TlsError::BadServerName => f.write_str("server name is neither a DNS name nor an IP address"),
            TlsError::BadIdentity(why) => write!(f, "serving certificate: {why}"),
            TlsError::Tls(e) => write!(f, "tls: {e}"),
            TlsError::IncomingOverflow => {
                write!(f, "peer sent more than {INCOMING_LIMIT} bytes that could not be processed")
            }
            TlsError::EncryptExhausted => f.write_str("tls: encryption keys exhausted"),
            TlsError::Closed => f.write_str("tls session closed"),
            TlsError::Internal(why) => write!(f, "tls: {why}"),
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Tls(e)
    }
}

/// rustls' clock: our function giving Unix seconds.
struct Clock(fn() -> u64);

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

impl TimeProvider for Clock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs((self.0)())))
    }
}

/// rustls' random source: our function.
struct Random(RandomFill);

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Random")
    }
}

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        (self.0)(buf).map_err(|()| GetRandomFailed)
    }
}

/// The DER certificates of every CERTIFICATE block of `pem` (other blocks are skipped).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|_| TlsError::Pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    Ok(certs)
}

/// The RustCrypto provider drawing its random bytes from `rng`. rustls wants the source for
/// the program's life: each call keeps one small allocation for good.
fn provider(rng: RandomFill) -> Arc<CryptoProvider> {
    let random: &'static Random = Box::leak(Box::new(Random(rng)));
    Arc::new(CryptoProvider { secure_random: random, ..rustls_rustcrypto::provider() })
}

/// The trust anchors of the PEM bundle `ca_pem`.
fn roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(ca_pem)? {
        roots.add(cert).map_err(|_| TlsError::BadCaCertificate)?;
    }
    Ok(roots)
}

/// A TLS client configuration, shared by the sessions made from it.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A configuration trusting every certificate of the PEM bundle `ca_pem`, with `now`
    /// giving the time in Unix seconds (for certificate validity) and `rng` the random
    /// bytes of the handshakes. Offers TLS 1.3 and 1.2.
    ///
    /// rustls wants its random source for the program's life: each call keeps one small
    /// allocation for good, so make configurations once, not per connection.
    pub fn new(ca_pem: &[u8], now: fn() -> u64, rng: RandomFill) -> Result<Self, TlsError> {
        let roots = roots(ca_pem)?;
        let config = ClientConfig::builder_with_details(provider(rng), Arc::new(Clock(now)))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConfig { config: Arc::new(config) })
    }

    /// The rustls configuration.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// A TLS server configuration: the server's certificate chain and key, and the CA bundle
/// its clients' certificates must chain to. Shared by the sessions made from it.
#[derive(Clone)]
pub struct ServerTlsConfig {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsConfig").finish_non_exhaustive()
    }
}

impl ServerTlsConfig {
    /// A configuration serving `chain_pem` (the server's certificate first) with the PKCS#8
    /// `key_pem`, to clients that present a certificate chaining to a CA of `client_ca_pem`,
    /// valid at `now` (Unix seconds). Offers TLS 1.3 and 1.2. Like [`TlsConfig::new`], each
    /// call keeps one small allocation for good.
    pub fn new(
        client_ca_pem: &[u8],
        chain_pem: &[u8],
        key_pem: &[u8],
        now: fn() -> u64,
        rng: RandomFill,
    ) -> Result<Self, TlsError> {
        let roots = Arc::new(roots(client_ca_pem)?);
        let chain = pem_certificates(chain_pem)
            .map_err(|_| TlsError::BadIdentity("no certificate in the serving certificate's PEM"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| TlsError::BadIdentity("the private key is not PEM PKCS#8, SEC1 or PKCS#1"))?;
        let provider = provider(rng);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|_| TlsError::BadCaCertificate)?;
        let config = ServerConfig::builder_with_details(provider, Arc::new(Clock(now)))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|_| {
                TlsError::BadIdentity("the key does not match the certificate or is not supported")
            })?;
        Ok(ServerTlsConfig { config: Arc::new(config) })
    }
}

/// What a [`Session`] needs of rustls' unbuffered client or server connection.
pub trait Role {
    /// The connection's side-specific data.
    type Data;
    /// Processes the records of `incoming` (rustls' `process_tls_records`).
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The state both sides share.
    fn common(&self) -> &CommonState;
}

impl Role for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Role for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

/// A TLS client connection.
pub type TlsSession = Session<UnbufferedClientConnection>;

/// A TLS server connection.
pub type TlsServerSession = Session<UnbufferedServerConnection>;

/// One TLS connection, driven by the caller over a TCP socket.
pub struct Session<C: Role> {
    conn: C,
    /// Received bytes rustls has not consumed yet.
    incoming: Vec<u8>,
    /// Bytes to send to the peer.
    outgoing: Vec<u8>,
    /// Decrypted application data not yet read.
    plaintext: Vec<u8>,
    /// Plaintext written before the handshake finished.
    pending: Vec<u8>,
    /// The first error, repeated by every later call.
    failed: Option<TlsError>,
    close_requested: bool,
    close_sent: bool,
    peer_closed: bool,
    closed: bool,
}

impl<C: Role> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A session with the server `server_name`, a DNS name or an IP address literal, which
    /// its certificate must carry. The ClientHello is ready in [`Self::take_outgoing`] at
    /// once.
    pub fn new(config: &TlsConfig, server_name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name).map_err(|_| TlsError::BadServerName)?.to_owned();
        Session::over(UnbufferedClientConnection::new(config.config.clone(), name)?)
    }
}

impl TlsServerSession {
    /// A session for a client that has just connected: it waits for the ClientHello.
    pub fn accept(config: &ServerTlsConfig) -> Result<Self, TlsError> {
        Session::over(UnbufferedServerConnection::new(config.config.clone())?)
    }

    /// Whether the client presented a certificate (which the configuration verified).
    pub fn client_verified(&self) -> bool {
        !self.conn.common().is_handshaking()
            && self.conn.common().peer_certificates().is_some_and(|c| !c.is_empty())
    }
}

impl<C: Role> Session<C> {
    fn over(conn: C) -> Result<Self, TlsError> {
        let mut s = Session {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            pending: Vec::new(),
            failed: None,
            close_requested: false,
            close_sent: false,
            peer_closed: false,
            closed: false,
        };
        s.drive()?;
        Ok(s)
    }

    /// Hands the session bytes read from the TCP socket; returns how many it took. It takes
    /// all of them unless decrypted data waits to be [read](Self::read): then the caller
    /// keeps the rest and offers it again after reading. An error (a handshake failure, a
    /// bad record, [`TlsError::IncomingOverflow`]) ends the session.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, TlsError> {
        self.check()?;
        if self.peer_closed {
            // Nothing after the peer's close_notify counts.
            return Ok(data.len());
        }
        let mut taken = 0;
        loop {
            let n = (INCOMING_LIMIT - self.incoming.len()).min(data.len() - taken);
            self.incoming.extend_from_slice(&data[taken..taken + n]);
            taken += n;
            self.drive()?;
            if taken == data.len() || self.peer_closed {
                return Ok(data.len());
            }
            if self.incoming.len() == INCOMING_LIMIT {
                if self.plaintext.len() >= PLAINTEXT_LIMIT {
                    return Ok(taken);
                }
                return Err(self.fail(TlsError::IncomingOverflow));
            }
        }
    }

    /// Appends the bytes to write to the TCP socket to `out`.
    pub fn take_outgoing(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.outgoing);
    }

    /// Whether bytes wait in [`Self::take_outgoing`].
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Queues `plaintext` to be sent, encrypted once the handshake is done; returns how
    /// much it took: less than all when [`WRITE_LIMIT`] bytes already wait (take the
    /// outgoing bytes first).
    pub fn write(&mut self, plaintext: &[u8]) -> Result<usize, TlsError> {
        self.check()?;
        if self.close_requested {
            return Err(TlsError::Closed);
        }
        let room = WRITE_LIMIT.saturating_sub(self.pending.len() + self.outgoing.len());
        let n = room.min(plaintext.len());
        self.pending.extend_from_slice(&plaintext[..n]);
        self.drive()?;
        Ok(n)
    }

    /// Appends the decrypted application data received so far to `out`; returns how many
    /// bytes. Ok(0) when there is none (yet).
    pub fn read(&mut self, out: &mut Vec<u8>) -> Result<usize, TlsError> {
        let start = out.len();
        loop {
            out.append(&mut self.plaintext);
            if self.incoming.is_empty() || self.failed.is_some() {
                break;
            }
            // Records held back while the plaintext buffer was full.
            if let Err(e) = self.drive() {
                if out.len() == start {
                    return Err(e);
                }
                break;
            }
            if self.plaintext.is_empty() {
                break;
            }
        }
        match (&self.failed, out.len() - start) {
            (Some(e), 0) => Err(e.clone()),
            (_, n) => Ok(n),
        }
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.common().is_handshaking()
    }

    /// Whether the peer sent close_notify: no more data will come.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether both sides sent close_notify.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The error that ended the session, if one did.
    pub fn error(&self) -> Option<&TlsError> {
        self.failed.as_ref()
    }

    /// Sends close_notify after what was written (once the handshake is done, if it is
    /// still going on). Nothing more can be written.
    pub fn close(&mut self) -> Result<(), TlsError> {
        self.check()?;
        self.close_requested = true;
        self.drive()
    }

    /// The negotiated protocol, "TLSv1.3" or "TLSv1.2", once known.
    pub fn protocol_version(&self) -> Option<&'static str> {
        match self.conn.common().protocol_version()? {
            ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => Some("other"),
        }
    }

    fn check(&self) -> Result<(), TlsError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: TlsError) -> TlsError {
        self.failed = Some(e.clone());
        e
    }

    /// Runs rustls over the incoming bytes until it waits for the peer (or, after the
    /// handshake, has nothing more to do), encoding what it has to send, collecting what it
    /// decrypted and encrypting what waits to be written.
    fn drive(&mut self) -> Result<(), TlsError> {
        self.check()?;
        let r = self.drive_inner();
        r.map_err(|e| self.fail(e))
    }

    fn drive_inner(&mut self) -> Result<(), TlsError> {
        while !self.closed {
            if self.plaintext.len() >= PLAINTEXT_LIMIT {
                // Leave the remaining records encrypted until the caller reads.
                return Ok(());
            }
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut self.incoming);
            let mut stop = false;
            match state.map_err(TlsError::Tls)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::ReadEarlyData(_) => {
                    // Only a server that offers 0-RTT gets here, and ours do not.
                    return Err(TlsError::Internal("early data without offering it"));
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let start = self.outgoing.len();
                    self.outgoing.resize(start + 2048, 0);
                    let n = match encode.encode(&mut self.outgoing[start..]) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                            self.outgoing.resize(start + required_size, 0);
                            encode.encode(&mut self.outgoing[start..])
                        }
                        other => other,
                    };
                    self.outgoing.truncate(start + *n.as_ref().unwrap_or(&0));
                    n.map_err(|_| TlsError::Internal("a handshake record could not be encoded"))?;
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The encoded records are in `outgoing`, which the caller will send once.
                    transmit.done();
                }
                ConnectionState::BlockedHandshake => stop = true,
                ConnectionState::WriteTraffic(mut traffic) => {
                    if !self.close_sent {
                        let pending = core::mem::take(&mut self.pending);
                        if !pending.is_empty() {
                            encrypt(&mut traffic, &pending, &mut self.outgoing)?;
                        }
                        if self.close_requested {
                            close_notify(&mut traffic, &mut self.outgoing)?;
                            self.close_sent = true;
                            // Once more: rustls says Closed if the peer closed already.
                            continue;
                        }
                    }
                    stop = true;
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    // rustls reads nothing after close_notify: drop it rather than keep it.
                    discard = self.incoming.len();
                }
                ConnectionState::Closed => {
                    self.closed = true;
                    discard = self.incoming.len();
                }
                _ => stop = true,
            }
            self.incoming.drain(..discard.min(self.incoming.len()));
            if stop {
                break;
            }
        }
        Ok(())
    }
}

/// An upper bound guess of the ciphertext `len` plaintext bytes become.
fn sealed_len(len: usize) -> usize {
    len + (len / 16384 + 1) * 64
}

fn encrypt<D>(traffic: &mut WriteTraffic<'_, D>, data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
    let start = out.len();
    out.resize(start + sealed_len(data.len()), 0);
    let mut r = traffic.encrypt(data, &mut out[start..]);
    if let Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) = r {
        out.resize(start + required_size, 0);
        r = traffic.encrypt(data, &mut out[start..]);
    }
    finish(out, start, r)
}

fn close_notify<D>(traffic: &mut WriteTraffic<'_, D>, out: &mut Vec<u8>) -> Result<(), TlsError> {
    let start = out.len();
    out.resize(start + 64, 0);
    let mut r = traffic.queue_close_notify(&mut out[start..]);
    if let Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) = r {
        out.resize(start + required_size, 0);
        r = traffic.queue_close_notify(&mut out[start..]);
    }
    finish(out, start, r)
}

fn finish(out: &mut Vec<u8>, start: usize, r: Result<usize, EncryptError>) -> Result<(), TlsError> {
    match r {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(TlsError::EncryptExhausted)
        }
    }
}

/// Certificates and peers for tests of TLS and of what runs over it.
#[cfg(test)]
pub mod testpki {
    use super::*;
    use alloc::string::String;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConnection, SupportedProtocolVersion};

    /// Our clock in the tests: 2027-01-15.
    pub const NOW: u64 = 1_800_000_000;

    pub fn now() -> u64 {
        NOW
    }

    #[allow(clippy::result_unit_err, reason = "the signature of RandomFill")]
    pub fn os_random(buf: &mut [u8]) -> Result<(), ()> {
        getrandom::getrandom(buf).map_err(|_| ())
    }

    /// A CA and a server certificate signed by it.
    pub struct Pki {
        pub ca_pem: String,
        pub chain: Vec<CertificateDer<'static>>,
        pub key: PrivateKeyDer<'static>,
        /// The server's chain and key as PEM.
        pub chain_pem: String,
        pub key_pem: String,
        /// A client certificate from the same CA, and its key.
        pub client_chain: Vec<CertificateDer<'static>>,
        pub client_key: PrivateKeyDer<'static>,
    }

    pub fn pki(names: &[&str], expired: bool) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Each CA its own name: one CA is not mistaken for another's.
        static SERIAL: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(DnType::CommonName, format!("test ca {n}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| String::from(*n)).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "kube-apiserver-kubelet-client");
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
            key_pem: key.serialize_pem(),
            client_chain: vec![client_cert.der().clone()],
            client_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        }
    }

    /// A std rustls client, with the client certificate of `pki` when `with_cert`.
    pub fn std_client(
        trust: &Pki,
        id: Option<&Pki>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> ClientConnection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(trust.chain[1].clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match id {
            Some(p) => b.with_client_auth_cert(p.client_chain.clone(), p.client_key.clone_key()).unwrap(),
            None => b.with_no_client_auth(),
        };
        ClientConnection::new(Arc::new(cfg), ServerName::try_from("node.test").unwrap()).unwrap()
    }

    pub fn serving(pki: &Pki, client_ca: &str) -> ServerTlsConfig {
        ServerTlsConfig::new(
            client_ca.as_bytes(),
            pki.chain_pem.as_bytes(),
            pki.key_pem.as_bytes(),
            now,
            os_random,
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testpki::*;
    use super::*;
    use alloc::string::String;
    use rustls::{CertificateError, ClientConnection, ServerConnection, SupportedProtocolVersion};
    use std::io::{Read, Write};

    fn server(pki: &Pki, versions: &[&'static SupportedProtocolVersion]) -> ServerConnection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap();
        let mut s = ServerConnection::new(Arc::new(cfg)).unwrap();
        s.set_buffer_limit(None);
        s
    }

    fn client(ca_pem: &str, name: &str) -> TlsSession {
        let cfg = TlsConfig::new(ca_pem.as_bytes(), now, os_random).unwrap();
        TlsSession::new(&cfg, name).unwrap()
    }

    /// A client and a server joined by in-memory pipes.
    struct Pair {
        c: TlsSession,
        s: ServerConnection,
        /// What the client decrypted.
        c_got: Vec<u8>,
        /// What the server decrypted.
        s_got: Vec<u8>,
        /// The server read close_notify.
        s_eof: bool,
        /// How often the client took fewer bytes than offered.
        partial_feeds: usize,
    }

    impl Pair {
        fn new(pki: &Pki, versions: &[&'static SupportedProtocolVersion], ca_pem: &str, name: &str) -> Self {
            Pair {
                c: client(ca_pem, name),
                s: server(pki, versions),
                c_got: vec![],
                s_got: vec![],
                s_eof: false,
                partial_feeds: 0,
            }
        }

        fn drain_server(&mut self) {
            let mut buf = [0u8; 4096];
            loop {
                match self.s.reader().read(&mut buf) {
                    Ok(0) => {
                        self.s_eof = true;
                        break;
                    }
                    Ok(n) => self.s_got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }

        /// Moves bytes both ways until neither side has anything more to send.
        fn pump(&mut self) -> Result<(), TlsError> {
            for _ in 0..1000 {
                let mut to_server = Vec::new();
                self.c.take_outgoing(&mut to_server);
                let mut rd = &to_server[..];
                while !rd.is_empty() {
                    // Refused while the server's plaintext buffer is full: drain and retry.
                    let _ = self.s.read_tls(&mut rd);
                    self.s.process_new_packets().expect("server failed");
                    self.drain_server();
                }
                let mut to_client = Vec::new();
                while self.s.wants_write() {
                    self.s.write_tls(&mut to_client).unwrap();
                }
                let mut off = 0;
                while off < to_client.len() {
                    let n = self.c.feed(&to_client[off..])?;
                    if n < to_client.len() - off {
                        self.partial_feeds += 1;
                    }
                    off += n;
                    self.c.read(&mut self.c_got)?;
                }
                self.c.read(&mut self.c_got)?;
                if to_server.is_empty() && to_client.is_empty() {
                    return Ok(());
                }
            }
            panic!("the pair never went quiet");
        }

        /// Writes all of `data` from the client, pumping when the session's buffer is full.
        fn client_write_all(&mut self, mut data: &[u8]) {
            while !data.is_empty() {
                let n = self.c.write(data).unwrap();
                data = &data[n..];
                self.pump().unwrap();
            }
        }
    }

    fn certificate_error(r: Result<(), TlsError>) -> CertificateError {
        match r {
            Err(TlsError::Tls(rustls::Error::InvalidCertificate(e))) => e,
            other => panic!("expected a certificate error, got {other:?}"),
        }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn tls13_handshake_and_http_both_ways_with_large_bodies() {
        let pki = pki(&["api.test"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "api.test");
        assert!(p.c.is_handshaking());
        assert!(p.c.wants_write(), "the ClientHello is ready at once");
        // Written before the handshake: queued, then sent.
        let request = b"GET /api/v1/pods HTTP/1.1\r\nHost: api.test\r\n\r\n";
        assert_eq!(p.c.write(request), Ok(request.len()));
        p.pump().unwrap();
        assert!(!p.c.is_handshaking());
        assert_eq!(p.c.protocol_version(), Some("TLSv1.3"));
        assert_eq!(p.s_got, request);

        // A 100 KB response: more than the session holds decrypted.
        let payload = body(100_000);
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", payload.len()).into_bytes();
        response.extend_from_slice(&payload);
        p.s.writer().write_all(&response).unwrap();
        p.pump().unwrap();
        assert_eq!(p.c_got.len(), response.len());
        assert!(p.c_got == response);
        // 300 KB more than the session holds, decrypted and encrypted together: `feed`
        // takes it in parts while the pump reads.
        p.c_got.clear();
        let more = body(300_000);
        p.s.writer().write_all(&more).unwrap();
        p.pump().unwrap();
        assert!(p.c_got == more);
        assert!(p.partial_feeds > 0, "the session held back while its plaintext was unread");

        // A 100 KB request body the other way: more than `write` takes at once.
        p.s_got.clear();
        let mut req = b"PUT /blob HTTP/1.1\r\nHost: api.test\r\n\r\n".to_vec();
        req.extend_from_slice(&body(100_000));
        let first = p.c.write(&req).unwrap();
        assert!(first > 0 && first <= WRITE_LIMIT, "{first}");
        assert_eq!(p.c.write(&req[first..]), Ok(0), "full until the outgoing bytes are taken");
        p.client_write_all(&req[first..]);
        p.pump().unwrap();
        assert!(p.s_got == req);
        p.c_got.clear();
        p.s.writer().write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        p.pump().unwrap();
        assert_eq!(p.c_got, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(p.c.incoming.len() <= INCOMING_LIMIT);
    }

    #[test]
    fn close_notify_both_ways() {
        let pki = pki(&["api.test"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "api.test");
        p.pump().unwrap();
        p.s.writer().write_all(b"bye").unwrap();
        p.s.send_close_notify();
        p.pump().unwrap();
        assert_eq!(p.c_got, b"bye");
        assert!(p.c.peer_closed());
        assert!(!p.c.is_closed());
        // Bytes after close_notify are ignored.
        assert_eq!(p.c.feed(&[0x17, 3, 3, 0, 1, 0]), Ok(6));
        // We may still write after the peer closed; then we close too.
        assert_eq!(p.c.write(b"last"), Ok(4));
        p.c.close().unwrap();
        p.pump().unwrap();
        assert_eq!(p.s_got, b"last");
        assert!(p.s_eof, "the server read our close_notify");
        assert!(p.c.is_closed());
        assert_eq!(p.c.write(b"more"), Err(TlsError::Closed));
    }

    #[test]
    fn close_before_the_peer() {
        let pki = pki(&["api.test"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "api.test");
        p.c.write(b"one request").unwrap();
        // Closing during the handshake: close_notify follows the data once it is done.
        p.c.close().unwrap();
        assert!(p.c.is_handshaking());
        p.pump().unwrap();
        assert_eq!(p.s_got, b"one request");
        assert!(p.s_eof);
        assert!(!p.c.is_closed());
        p.s.writer().write_all(b"answer").unwrap();
        p.pump().unwrap();
        assert_eq!(p.c_got, b"answer", "the answer still arrives after our close_notify");
    }

    #[test]
    fn tls12_only_server() {
        let pki = pki(&["api.test"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS12], &pki.ca_pem, "api.test");
        p.c.write(b"ping").unwrap();
        p.pump().unwrap();
        assert_eq!(p.c.protocol_version(), Some("TLSv1.2"));
        assert_eq!(p.s_got, b"ping");
        let big = body(70_000);
        p.s.writer().write_all(&big).unwrap();
        p.pump().unwrap();
        assert!(p.c_got == big);
        p.s.send_close_notify();
        p.pump().unwrap();
        assert!(p.c.peer_closed());
    }

    #[test]
    fn wrong_ca_is_refused() {
        let pki = pki(&["api.test"], false);
        let other = self::pki(&["api.test"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &other.ca_pem, "api.test");
        let err = p.pump();
        assert_eq!(certificate_error(err.clone()), CertificateError::UnknownIssuer);
        let text = err.unwrap_err().to_string();
        assert!(text.contains("certificate"), "{text}");
        // The error sticks.
        assert!(matches!(p.c.feed(&[1, 2, 3]), Err(TlsError::Tls(_))));
        assert!(matches!(p.c.write(b"x"), Err(TlsError::Tls(_))));
        assert!(p.c.error().is_some());
    }

    #[test]
    fn wrong_name_is_refused() {
        let pki = pki(&["api.test"], false);
        let mut p =
            Pair::new(&pki, &[&rustls::version::TLS13, &rustls::version::TLS12], &pki.ca_pem, "web.test");
        let e = certificate_error(p.pump());
        assert!(
            matches!(e, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn ip_literal_name_against_ip_san() {
        let pki = pki(&["10.0.2.100"], false);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "10.0.2.100");
        p.c.write(b"hello").unwrap();
        p.pump().unwrap();
        assert!(!p.c.is_handshaking());
        assert_eq!(p.s_got, b"hello");

        let mut q = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "10.0.2.101");
        let e = certificate_error(q.pump());
        assert!(
            matches!(e, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn expired_certificate_is_refused() {
        let pki = pki(&["api.test"], true);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &pki.ca_pem, "api.test");
        let e = certificate_error(p.pump());
        assert!(matches!(e, CertificateError::Expired | CertificateError::ExpiredContext { .. }), "{e:?}");
    }

    /// Feeds `junk` to a fresh session in pieces; it must fail with a typed error, holding
    /// no more than its limit on the way.
    fn fails_on(junk: &[u8]) -> TlsError {
        let pki = pki(&["api.test"], false);
        let mut c = client(&pki.ca_pem, "api.test");
        let mut out = Vec::new();
        c.take_outgoing(&mut out);
        for piece in junk.chunks(1000) {
            match c.feed(piece) {
                Ok(n) => assert_eq!(n, piece.len()),
                Err(e) => return e,
            }
            assert!(c.incoming.len() <= INCOMING_LIMIT);
            assert!(c.plaintext.is_empty());
        }
        panic!("{} bytes of junk were accepted", junk.len());
    }

    #[test]
    fn garbage_from_the_server_is_a_typed_error() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20 {
            let junk: Vec<u8> = (0..300_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(matches!(fails_on(&junk), TlsError::Tls(_)));
        }
        // A record header announcing 65535 bytes: more than any record may hold.
        let mut huge = vec![0x16, 0x03, 0x03, 0xff, 0xff];
        huge.resize(100_000, 0);
        assert!(matches!(fails_on(&huge), TlsError::Tls(_)));
        // Well-framed handshake records carrying one 16 MiB handshake message.
        let mut big_message = Vec::new();
        for i in 0..64 {
            big_message.extend_from_slice(&[0x16, 0x03, 0x03, 0x40, 0x00]);
            let mut payload = vec![0u8; 0x4000];
            if i == 0 {
                payload[..4].copy_from_slice(&[2, 0xff, 0xff, 0xff]);
            }
            big_message.extend_from_slice(&payload);
        }
        assert!(matches!(fails_on(&big_message), TlsError::Tls(_)));
        // Application data before any handshake.
        let mut early = Vec::new();
        for _ in 0..64 {
            early.extend_from_slice(&[0x17, 0x03, 0x03, 0x40, 0x00]);
            early.resize(early.len() + 0x4000, 0xaa);
        }
        assert!(matches!(fails_on(&early), TlsError::Tls(_)));
    }

    #[test]
    fn ca_bundles_and_names_are_checked() {
        let pki = pki(&["api.test"], false);
        let cfg = |pem: &[u8]| TlsConfig::new(pem, now, os_random).map(|_| ());
        assert_eq!(cfg(b""), Err(TlsError::NoCertificates));
        assert_eq!(cfg(b"no pem at all\n"), Err(TlsError::NoCertificates));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(cfg(key_only), Err(TlsError::NoCertificates));
        assert_eq!(
            cfg(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(TlsError::Pem)
        );
        assert_eq!(cfg(b"-----BEGIN CERTIFICATE-----\nAAAA\n"), Err(TlsError::Pem));
        // Base64 that is not a certificate.
        assert_eq!(
            cfg(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(TlsError::BadCaCertificate)
        );
        // Two CAs in one bundle: both trusted.
        let other = self::pki(&["api.test"], false);
        let bundle = format!("{}\n{}", other.ca_pem, pki.ca_pem);
        assert_eq!(pem_certificates(bundle.as_bytes()).unwrap().len(), 2);
        let mut p = Pair::new(&pki, &[&rustls::version::TLS13], &bundle, "api.test");
        p.pump().unwrap();
        assert!(!p.c.is_handshaking());

        let good = TlsConfig::new(pki.ca_pem.as_bytes(), now, os_random).unwrap();
        for bad in ["", "bad name!", "api..test"] {
            assert_eq!(TlsSession::new(&good, bad).map(|_| ()), Err(TlsError::BadServerName), "{bad:?}");
        }
        assert!(TlsSession::new(&good, "fd00::1").is_ok());
    }

    #[test]
    fn a_failing_random_source_fails_the_handshake() {
        fn broken(_: &mut [u8]) -> Result<(), ()> {
            Err(())
        }
        let pki = pki(&["api.test"], false);
        let cfg = TlsConfig::new(pki.ca_pem.as_bytes(), now, broken).unwrap();
        assert!(matches!(
            TlsSession::new(&cfg, "api.test"),
            Err(TlsError::Tls(rustls::Error::FailedToGetRandomBytes))
        ));
    }

    /// Moves bytes between a std client and our server session until both are quiet; the
    /// first error of our side, or the client's.
    fn pump_server(
        c: &mut ClientConnection,
        s: &mut TlsServerSession,
        s_got: &mut Vec<u8>,
        c_got: &mut Vec<u8>,
    ) -> Result<(), String> {
        for _ in 0..1000 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).unwrap();
            }
            let mut off = 0;
            while off < to_server.len() {
                off += s.feed(&to_server[off..]).map_err(|e| format!("server: {e}"))?;
                s.read(s_got).map_err(|e| format!("server: {e}"))?;
            }
            let mut to_client = Vec::new();
            s.take_outgoing(&mut to_client);
            let mut rd = &to_client[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().map_err(|e| format!("client: {e}"))?;
                let mut buf = [0u8; 8192];
                while let Ok(n) = c.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    c_got.extend_from_slice(&buf[..n]);
                }
            }
            if to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
        }
        panic!("the pair never went quiet");
    }

    #[test]
    fn a_server_session_serves_clients_certified_by_the_ca() {
        let pki = pki(&["node.test"], false);
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
            let cfg = serving(&pki, &pki.ca_pem);
            let mut s = TlsServerSession::accept(&cfg).unwrap();
            assert!(!s.wants_write(), "a server waits for the ClientHello");
            let mut c = std_client(&pki, Some(&pki), versions);
            c.writer().write_all(b"GET /containerLogs/a/b/c HTTP/1.1\r\n\r\n").unwrap();
            let (mut got, mut c_got) = (Vec::new(), Vec::new());
            pump_server(&mut c, &mut s, &mut got, &mut c_got).unwrap();
            assert!(!s.is_handshaking());
            assert!(s.client_verified());
            assert_eq!(got, b"GET /containerLogs/a/b/c HTTP/1.1\r\n\r\n");
            let expect = if versions[0] == &rustls::version::TLS13 { "TLSv1.3" } else { "TLSv1.2" };
            assert_eq!(s.protocol_version(), Some(expect));
            // 200 KB back: more than a session queues at once.
            let answer = body(200_000);
            let mut at = 0;
            while at < answer.len() {
                at += s.write(&answer[at..]).unwrap();
                pump_server(&mut c, &mut s, &mut got, &mut c_got).unwrap();
            }
            s.close().unwrap();
            pump_server(&mut c, &mut s, &mut got, &mut c_got).unwrap();
            assert!(c_got == answer);
        }
    }

    #[test]
    fn a_server_session_refuses_clients_without_a_certificate_from_the_ca() {
        let pki = pki(&["node.test"], false);
        let other = self::pki(&["node.test"], false);
        // No certificate at all.
        let mut s = TlsServerSession::accept(&serving(&pki, &pki.ca_pem)).unwrap();
        let mut c = std_client(&pki, None, &[&rustls::version::TLS13]);
        c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let e = pump_server(&mut c, &mut s, &mut got, &mut Vec::new()).unwrap_err();
        assert!(e.starts_with("server:"), "{e}");
        assert!(got.is_empty(), "nothing reaches the server's reader");
        assert!(!s.client_verified());
        // A certificate from another CA, over TLS 1.3 and 1.2.
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
            let mut s = TlsServerSession::accept(&serving(&pki, &pki.ca_pem)).unwrap();
            let mut c = std_client(&pki, Some(&other), versions);
            c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let e = pump_server(&mut c, &mut s, &mut got, &mut Vec::new()).unwrap_err();
            assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");
            assert!(got.is_empty());
        }
        // Junk instead of a ClientHello.
        let mut s = TlsServerSession::accept(&serving(&pki, &pki.ca_pem)).unwrap();
        let mut x = 0x9e37_79b9u32;
        let junk: Vec<u8> = (0..100_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let failed = junk.chunks(1000).any(|piece| s.feed(piece).is_err());
        assert!(failed, "junk must end the session");
        assert!(s.incoming.len() <= INCOMING_LIMIT);
    }

    #[test]
    fn serving_identities_are_checked() {
        let pki = pki(&["node.test"], false);
        let other = self::pki(&["node.test"], false);
        let cfg = |chain: &str, key: &str| {
            ServerTlsConfig::new(pki.ca_pem.as_bytes(), chain.as_bytes(), key.as_bytes(), now, os_random)
                .map(|_| ())
        };
        assert!(cfg(&pki.chain_pem, &pki.key_pem).is_ok());
        // A key that is not the certificate's: the provider cannot tell at set-up, but no
        // client accepts the handshake.
        let wrong = ServerTlsConfig::new(
            pki.ca_pem.as_bytes(),
            pki.chain_pem.as_bytes(),
            other.key_pem.as_bytes(),
            now,
            os_random,
        )
        .unwrap();
        let mut s = TlsServerSession::accept(&wrong).unwrap();
        let mut c = std_client(&pki, Some(&pki), &[&rustls::version::TLS13]);
        let e = pump_server(&mut c, &mut s, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(e.starts_with("client:"), "{e}");
        assert!(matches!(cfg("", &pki.key_pem), Err(TlsError::BadIdentity(_))));
        assert!(matches!(cfg(&pki.chain_pem, "no key"), Err(TlsError::BadIdentity(_))));
        assert_eq!(
            ServerTlsConfig::new(b"", pki.chain_pem.as_bytes(), pki.key_pem.as_bytes(), now, os_random)
                .map(|_| ()),
            Err(TlsError::NoCertificates)
        );
    }
}
