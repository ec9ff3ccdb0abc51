; Inno Setup 6 script: Windows installer for the frozen Merge Studio (dist\mergestudio from
; packaging\mergestudio.spec). Not built on the project's Linux machines: build.ps1 runs it
; on a Windows runner (.github/workflows/package.yml).
;
;   iscc /DAppVersion=0.1.0 packaging\windows\mergestudio.iss
;
; Per-user install by default (no admin prompt); "Install for all users" is offered in the
; privileges dialog. The app folder keeps Qt's LGPL DLLs as separate, replaceable files.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Compression
  ; lzma2/fast keeps a ~900 MB bundle to a few minutes; releases may pass /DCompression=lzma2/ultra64
  #define Compression "lzma2/fast"
#endif
#define AppName "Merge Studio"
#define AppExe "mergestudio.exe"
#define Root "..\.."

[Setup]
; Never change AppId: Windows recognises upgrades and the uninstaller by it.
AppId={{6F3B2C1E-8D4A-4E5F-9A7B-2C3D4E5F6A7B}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Merge Studio maintainers
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#Root}\dist
OutputBaseFilename=MergeStudio-{#AppVersion}-windows-x64-setup
SetupIconFile={#Root}\resources\icons\mergestudio.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} {#AppVersion}
Compression={#Compression}
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes
CloseApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the mergestudio command to PATH (for the command line)"; Flags: unchecked

[Files]
Source: "{#Root}\dist\mergestudio\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\{#AppExe}"; Parameters: "studio"; IconFilename: "{app}\{#AppExe}"
Name: "{group}\Licences"; Filename: "{app}\_internal\licenses"
Name: "{group}\{cm:UninstallProgram,{#AppName}}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Parameters: "studio"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Parameters: "studio"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Python may write __pycache__ folders next to bundled sources (transformers ships .py).
Type: filesandordirs; Name: "{app}\_internal"

[Code]
// PATH: append {app} for the user (or all users when installed per-machine) on request,
// remove exactly that entry on uninstall.
function EnvironmentKey(): String;
begin
  if IsAdminInstallMode() then
    Result := 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment'
  else
    Result := 'Environment';
end;

function EnvironmentRoot(): Integer;
begin
  if IsAdminInstallMode() then Result := HKEY_LOCAL_MACHINE else Result := HKEY_CURRENT_USER;
end;

procedure AddToPath(Dir: String);
var Paths: String;
begin
  if not RegQueryStringValue(EnvironmentRoot(), EnvironmentKey(), 'Path', Paths) then Paths := '';
  if Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') > 0 then exit;
  if (Paths <> '') and (Copy(Paths, Length(Paths), 1) <> ';') then Paths := Paths + ';';
  RegWriteExpandStringValue(EnvironmentRoot(), EnvironmentKey(), 'Path', Paths + Dir);
end;

procedure RemoveFromPath(Dir: String);
var Paths: String; P: Integer;
begin
  if not RegQueryStringValue(EnvironmentRoot(), EnvironmentKey(), 'Path', Paths) then exit;
  P := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';');
  if P = 0 then exit;
  Delete(Paths, P - 1, Length(Dir) + 1);
  if (Length(Paths) > 0) and (Paths[1] = ';') then Delete(Paths, 1, 1);
  RegWriteExpandStringValue(EnvironmentRoot(), EnvironmentKey(), 'Path', Paths);
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if (CurStep = ssPostInstall) and WizardIsTaskSelected('addtopath') then
    AddToPath(ExpandConstant('{app}'));
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
