using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>
/// A private certificate authority made for a test, a server certificate it issued for 127.0.0.1 and localhost, and a
/// client certificate, written as PEM files (authority, certificates, keys) into a folder of their own.
/// </summary>
public sealed class TestCertificates
{
    public TestCertificates(string folder, string name)
    {
        Directory.CreateDirectory(folder);
        var now = DateTimeOffset.UtcNow;
        using var authorityKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var authorityRequest = new CertificateRequest($"CN=Retrieval test authority {name}", authorityKey, HashAlgorithmName.SHA256);
        authorityRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        authorityRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        authorityRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(authorityRequest.PublicKey, false));
        using var authority = authorityRequest.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));

        Authority = X509CertificateLoader.LoadCertificate(authority.RawData);
        AuthorityPath = Path.Combine(folder, $"{name}-ca.pem");
        File.WriteAllText(AuthorityPath, authority.ExportCertificatePem());
        (CertificatePath, KeyPath) = Issue(authority, folder, $"{name}-server", "CN=127.0.0.1", ServerAuthentication, loopbackNames: true);
        (ClientCertificatePath, ClientKeyPath) = Issue(authority, folder, $"{name}-client", $"CN=Retrieval test caller {name}", ClientAuthentication);
    }

    private const string ServerAuthentication = "1.3.6.1.5.5.7.3.1", ClientAuthentication = "1.3.6.1.5.5.7.3.2";

    /// <summary>A certificate the authority issued for one purpose, written with its key as PEM files.</summary>
    private static (string Certificate, string Key) Issue(X509Certificate2 authority, string folder, string file, string subject, string purpose,
        bool loopbackNames = false)
    {
        var now = DateTimeOffset.UtcNow;
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        if (loopbackNames)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(System.Net.IPAddress.Loopback);
            names.AddDnsName("localhost");
            request.CertificateExtensions.Add(names.Build());
        }
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(purpose)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, true, false));
        using var certificate = request.Create(authority, now.AddDays(-1), now.AddDays(30), RandomNumberGenerator.GetBytes(8));
        var paths = (Path.Combine(folder, file + ".pem"), Path.Combine(folder, file + ".key"));
        File.WriteAllText(paths.Item1, certificate.ExportCertificatePem());
        File.WriteAllText(paths.Item2, key.ExportPkcs8PrivateKeyPem());
        return paths;
    }

    /// <summary>The authority's certificate (public part).</summary>
    public X509Certificate2 Authority { get; }
    public string AuthorityPath { get; }
    public string CertificatePath { get; }
    public string KeyPath { get; }

    /// <summary>A client certificate (for client authentication) the authority issued, and its key.</summary>
    public string ClientCertificatePath { get; }
    public string ClientKeyPath { get; }

    /// <summary>The client certificate with its key, as a caller presents it.</summary>
    public X509Certificate2 ClientCertificate() =>
        X509CertificateLoader.LoadPkcs12(X509Certificate2.CreateFromPemFile(ClientCertificatePath, ClientKeyPath).Export(X509ContentType.Pkcs12), null);

    /// <summary>A service's command-line settings to serve its https urls with the server certificate (Kestrel's own settings).</summary>
    public string[] KestrelArgs => ["--Kestrel:Certificates:Default:Path", CertificatePath, "--Kestrel:Certificates:Default:KeyPath", KeyPath];

    /// <summary>A handler for the tests' own channels that trusts this authority alone and presents the client certificate.</summary>
    public SocketsHttpHandler TrustingHandler()
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.ClientCertificates = [ClientCertificate()]; // asked for only by a service with Tls:ClientCaPath
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
        {
            if (certificate is null || (errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) != 0)
            {
                return false;
            }
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(Authority);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return chain.Build(X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
        };
        return handler;
    }
}
